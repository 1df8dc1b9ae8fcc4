"""Read a run of several processes: one record per rank (dcnprobe.distributed.layout), each
loaded with records.read_run. A directory holding run.jsonl is a single run, read as
rank 0 of 1, so every consumer can take either.

    ranks = read_ranks("runs/ddp")
    ranks.world_size, ranks.status, ranks.failed      # who died, if anyone
    ranks.runs[1].batches                             # rank 1's record, as read_run loads it
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dcnprobe.distributed.layout import RankInfo, rank_dirs, rank_info
from dcnprobe.errors import UsageError
from dcnprobe.records import RUN_FILE
from dcnprobe.runs import Run, read_run

# A rank that ended in one of these took the run down; the others only followed it
# (torchrun stops the survivors: interrupted, or stalled in a collective).
FAILED = ("crashed", "incomplete")
# The run's status, worst first: the first one any rank has is the run's. A rank that
# stalled or stopped itself as slow comes before `interrupted`: the launcher then stops
# the others, and what they end with says nothing of why.
STATUS_ORDER = ("crashed", "incomplete", "stalled", "slow", "interrupted", "ok")


@dataclass(frozen=True)
class RankEnd:
    """Where a rank's record stops: its status and last batch (epoch, batch, step, and
    the unix time when t0_unix is known)."""

    rank: int
    status: str
    epoch: int | None
    batch: int | None
    step: int | None
    unix_t: float | None
    torn: bool  # its last line was cut off: the process died mid-write

    def describe(self) -> str:
        # The record holds finished batches (numbered from 0): the rank stopped in the next one.
        where = (f"in epoch {self.epoch} after {self.batch + 1} of its batches ({self.step + 1} in all)"
                 if self.step is not None and self.batch is not None else "before its first batch")
        how = {"incomplete": "died (its record has no footer)", "crashed": "crashed"}.get(self.status, self.status)
        return f"rank {self.rank} {how} {where}"


@dataclass
class RankRuns:
    """Every rank's record of one run. `missing`: ranks the headers' world size promises
    that left no record at all."""

    path: Path
    runs: dict[int, Run]
    infos: dict[int, RankInfo]
    distributed: bool  # read from rank directories (False: a single run directory)
    missing: list[int] = field(default_factory=list)

    @property
    def ranks(self) -> list[int]:
        return sorted(self.runs)

    @property
    def world_size(self) -> int:
        return max([info.world_size for info in self.infos.values()] + [max(self.runs) + 1]
                   + [m + 1 for m in self.missing])

    def end(self, rank: int) -> RankEnd:
        run = self.runs[rank]
        last = run.batches.iloc[-1] if len(run.batches) else None
        t0 = self.infos[rank].t0_unix
        t = None
        if last is not None and "t" in last and last["t"] == last["t"]:
            t = float(last["t"])
        return RankEnd(rank, run.status,
                       int(last["epoch"]) if last is not None else None,
                       int(last["batch"]) if last is not None and "batch" in last else None,
                       int(last["step"]) if last is not None and "step" in last else None,
                       t0 + t if t0 is not None and t is not None else None, run.truncated)

    @property
    def failed(self) -> list[RankEnd]:
        """Ranks that died or crashed, the first to stop first (by unix time where known,
        else by the last step reached)."""
        ends = [self.end(r) for r in self.ranks if self.runs[r].status in FAILED]
        return sorted(ends, key=lambda e: (e.unix_t if e.unix_t is not None else float("inf"),
                                           e.step if e.step is not None else -1))

    @property
    def stopped(self) -> list[RankEnd]:
        """Ranks that stalled, crashed or died, the likely origin first: a rank whose own
        watchdog found it stalled (a launcher like torchrun then ends the others, which die
        without a footer), then the failed ones as `failed` orders them."""
        stalled = [self.end(r) for r in self.ranks if self.runs[r].status == "stalled"]
        return sorted(stalled, key=lambda e: e.unix_t if e.unix_t is not None else float("inf")) + self.failed

    @property
    def status(self) -> str:
        """The run's status: crashed when any rank crashed, died or never wrote a record;
        otherwise the worst of the ranks' statuses."""
        stopped = self.stopped
        if stopped and stopped[0].status == "stalled":
            return "stalled"  # the others ended with it
        if self.missing or self.failed:
            return "crashed"
        statuses = [self.runs[r].status for r in self.ranks]
        return next((s for s in STATUS_ORDER if s in statuses), statuses[0])


def read_ranks(path: str | Path) -> RankRuns:
    """Every rank's record under `path` (RUN/rankN/run.jsonl), or a single run directory
    as rank 0 of 1. Bad input (nothing to read, an unreadable record) is a UsageError."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no run at {path}")
    if path.is_file() or (path / RUN_FILE).is_file():
        run = read_run(path)
        return RankRuns(run.path.parent, {0: run}, {0: rank_info({})}, distributed=False)
    dirs = rank_dirs(path)
    if not dirs:
        raise UsageError(f"no run record in {path} (expected {RUN_FILE}, or rank0/{RUN_FILE}, rank1/... "
                         "for a distributed run)")
    runs, infos = {}, {}
    for rank, directory in dirs.items():
        if not (directory / RUN_FILE).is_file():
            continue  # the rank made its directory and died before its header: see `missing`
        run = read_run(directory)
        info = rank_info(run.header)
        if info.rank != rank and run.header.get("rank") is not None:
            raise UsageError(f"{directory / RUN_FILE}: its header says rank {info.rank}, not {rank}")
        runs[rank], infos[rank] = run, RankInfo(rank, info.world_size, info.local_rank, info.host, info.t0_unix)
    if not runs:
        raise UsageError(f"no rank of {path} wrote a run record (rank directories without {RUN_FILE})")
    world = max([i.world_size for i in infos.values()] + [max(dirs) + 1])
    missing = [r for r in range(world) if r not in runs]
    return RankRuns(path, runs, infos, distributed=True, missing=missing)
