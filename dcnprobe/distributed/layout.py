"""Where a run with several processes (torchrun / DDP ranks) keeps its records, and what
each rank's header says. Producers (the attach, one probe per rank) and readers
(dcnprobe.distributed.reader, the live view, the trace export) share these names.

    RUN/rank0/run.jsonl     one ordinary run record per rank, written by that rank alone:
    RUN/rank1/run.jsonl     a rank that dies leaves its record without a footer and the
    ...                     others intact

Each rank's header carries RANK_FIELDS at top level (`rank`, `world_size`, `local_rank`,
`host`, `t0_unix`); its batch records may carry the `collective` phase (hooks.COLLECTIVE).
A single-process record has none of the rank fields and reads as rank 0 of 1.

This module is read inside the training process (the attach names the directories from
it), so it imports only the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dcnprobe.records import RUN_FILE

RANK_DIR_PREFIX = "rank"
_RANK_DIR = re.compile(rf"^{RANK_DIR_PREFIX}(\d+)$")

# Header fields of a rank's record (documented in records.COLUMNS[HEADER]).
RANK = "rank"
WORLD_SIZE = "world_size"
LOCAL_RANK = "local_rank"
HOST = "host"
T0_UNIX = "t0_unix"  # time.time() when the probe started: record time t is unix time t0_unix + t
RANK_FIELDS = (RANK, WORLD_SIZE, LOCAL_RANK, HOST, T0_UNIX)


def rank_dir(run_dir: str | Path, rank: int) -> Path:
    """The directory rank `rank` writes its record into."""
    return Path(run_dir) / f"{RANK_DIR_PREFIX}{int(rank)}"


def rank_dirs(run_dir: str | Path) -> dict[int, Path]:
    """{rank: its directory} for every rank directory under `run_dir`, by rank; empty when
    there is none (a single run, or nothing yet)."""
    path = Path(run_dir)
    if not path.is_dir():
        return {}
    found = {}
    for child in path.iterdir():
        match = _RANK_DIR.match(child.name)
        if match and child.is_dir():
            found[int(match.group(1))] = child
    return dict(sorted(found.items()))


def record_files(run_dir: str | Path) -> list[Path]:
    """The run records begun under `run_dir`: its own run.jsonl, or each rank's."""
    single = Path(run_dir) / RUN_FILE
    if single.exists():
        return [single]
    return [d / RUN_FILE for d in rank_dirs(run_dir).values() if (d / RUN_FILE).exists()]


def is_distributed(run_dir: str | Path) -> bool:
    """A directory of rank directories (not a run directory with its own run.jsonl)."""
    return bool(rank_dirs(run_dir))


@dataclass(frozen=True)
class RankInfo:
    """Who wrote a record: its rank among world_size processes, on which host, and when
    its clock started (None where the record predates these fields)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    host: str | None = None
    t0_unix: float | None = None

    @property
    def label(self) -> str:
        return f"rank {self.rank}"


def rank_info(header: Mapping[str, Any]) -> RankInfo:
    """The rank fields of a header; a single-process record is rank 0 of 1."""
    rank = _int(header.get(RANK), 0)
    t0 = header.get(T0_UNIX)
    return RankInfo(rank=rank, world_size=_int(header.get(WORLD_SIZE), 1),
                    local_rank=_int(header.get(LOCAL_RANK), rank),
                    host=str(header[HOST]) if header.get(HOST) is not None else None,
                    t0_unix=float(t0) if isinstance(t0, (int, float)) else None)


def _int(value: Any, default: int) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default
