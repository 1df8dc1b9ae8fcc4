"""Synthetic records of a distributed run (RUN/rankN/run.jsonl), with known answers.

Each rank's own work comes from synthetic_runs.write_run with that rank's knobs (its
phases, memory samples, workers, machine load). The ranks are then coupled the way
synchronous data-parallel training couples them: at every step each rank reaches the
collectives after its own work; all leave together once the last has arrived and the
transfer is done. So a rank's `collective` is its wait for the last rank plus the
transfer, its `total` grows by that, and every rank ends each step at the same time.
The coupled records are written with the real RunWriter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthetic_runs import write_run

from dcnprobe.distributed.layout import rank_dir
from dcnprobe.records import BATCH, HEADER, MEMORY, RUN_FILE, RunWriter

T0_UNIX = 1_760_000_000.0  # the run's start on the unix clock (ranks start within a second)


def write_ranks(run_dir: Path, ranks: list[dict[str, Any]], *, transfer_s: float = 0.002,
                hosts: list[str] | None = None, crash: dict[str, Any] | None = None,
                collectives: bool = True, **common: Any) -> Path:
    """ranks[r]: write_run's knobs for rank r (on top of `common`), and `extra_forward_s`
    (a rank slower in every epoch: an imbalance, not a slowdown). crash: {"rank": r,
    "step": s, "footer": None or "crashed"}: rank r's record ends after step s (None: no
    footer, the process died); the others end there too, stopped by the launcher
    ("interrupted"). collectives=False leaves the phase out (records of an older probe)."""
    raw = []
    for rank, knobs in enumerate(ranks):
        knobs = dict(knobs)
        extra = knobs.pop("extra_forward_s", 0.0)  # this rank's forward is longer in every epoch
        directory = run_dir.with_name(run_dir.name + ".raw") / f"rank{rank}"
        write_run(directory, **{"seed": rank, **common, **knobs})
        records = [json.loads(line) for line in (directory / RUN_FILE).read_text().splitlines()]
        for record in records:
            if record["type"] == BATCH:
                record["forward"] += extra
                record["total"] += extra
        raw.append(records)
    world = len(ranks)
    own = [{r["step"]: r["total"] for r in records if r["type"] == BATCH} for records in raw]
    steps = sorted(set.intersection(*(set(o) for o in own)))
    t, ends = 0.0, {}
    for step in steps:
        t += max(o[step] for o in own) + transfer_s
        ends[step] = t
    last_step = crash["step"] if crash else None
    for rank, records in enumerate(raw):
        writer = RunWriter(rank_dir(run_dir, rank))
        for record in records:
            kind = record.pop("type")
            step = record.get("step")
            if last_step is not None and step is not None and step > last_step:
                break  # the crash: nothing after this step was written
            if kind == HEADER:
                record.update(rank=rank, world_size=world, local_rank=rank % 2, pid=4000 + rank,
                              host=(hosts or ["node0"] * world)[rank], t0_unix=T0_UNIX + 0.1 * rank)
            elif kind == BATCH:
                wait = max(o[step] for o in own) - record["total"] + transfer_s
                if collectives:
                    record["collective"] = wait
                else:
                    record["other"] += wait  # unrecorded: the wait lands outside every phase
                record["total"] += wait
                record["t"] = ends[step] - 0.1 * rank  # the same instant on each rank's own clock
            elif kind == MEMORY and step in ends:
                record["t"] = ends[step] - 0.1 * rank
            writer.write(kind, record)
        if crash:
            if rank == crash["rank"] and crash.get("footer"):
                writer.write_footer(crash["footer"])
            elif rank != crash["rank"]:
                writer.write_footer("interrupted")
        writer.close()
    return run_dir
