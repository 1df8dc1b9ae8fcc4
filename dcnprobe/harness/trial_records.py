"""A trial's records as they grow, one run or every rank of a distributed one, and what
the harness concludes from them.

A distributed trial (a `torchrun` command) writes RUN/rankN/run.jsonl, one per rank
(dcnprobe.distributed.layout); ranks appear as they start training. Each rank's records
feed its own early stop: the trial is slow as soon as any rank is, since in synchronous
training the others wait for it. Afterwards the trial is as slow as its slowest rank.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dcnprobe.analysis import Analysis, analyze_run, write_analysis
from dcnprobe.distributed.analysis import analyze_ranks, write_ranks_analysis
from dcnprobe.distributed.layout import rank_dirs
from dcnprobe.errors import UsageError
from dcnprobe.harness.early_stop import EarlyStop
from dcnprobe.records import RUN_FILE, RecordFollower


class TrialRecords:
    def __init__(self, out: Path, make_stop: Callable[[], EarlyStop]) -> None:
        self.out, self.make_stop = out, make_stop
        self.tails: dict[Path, tuple[RecordFollower, EarlyStop, str]] = {}
        self._batches_per_epoch: int | None = None
        self.world_size = 1  # from the ranks' headers

    @property
    def started(self) -> bool:
        return any(tail.started for tail, _, _ in self.tails.values())

    def read(self) -> list[dict[str, Any]]:
        """New records of every record file, each fed to its own early stop."""
        self._discover()
        records = []
        for tail, stop, _ in self.tails.values():
            for record in tail.read():
                stop.feed(record)
                records.append(record)
                if record.get("type") == "header" and isinstance(record.get("world_size"), int):
                    self.world_size = max(self.world_size, record["world_size"])
        return records

    def decide(self) -> str | None:
        for _, stop, label in self.tails.values():
            reason = stop.decide()
            if reason:
                return label + reason
        return None

    def decide_healthy(self) -> str | None:
        """A reason to end the trial as clearly healthy: every rank's record says so (a
        rank not yet training, or not yet sure, lets the trial run)."""
        reasons = [stop.decide_healthy() for _, stop, _ in self.tails.values()]
        if len(reasons) < self.world_size or not all(reasons):
            return None
        return reasons[0] if len(reasons) == 1 else f"every rank ({len(reasons)}): {reasons[0]}"

    @property
    def last_ratio(self) -> tuple[float, float | None, float | None] | None:
        ratios = [stop.last_ratio for _, stop, _ in self.tails.values() if stop.last_ratio]
        return max(ratios, key=lambda r: r[0]) if ratios else None

    @property
    def batches_per_epoch(self) -> int | None:
        return self._batches_per_epoch

    @batches_per_epoch.setter
    def batches_per_epoch(self, value: int | None) -> None:
        self._batches_per_epoch = value
        for _, stop, _ in self.tails.values():
            stop.batches_per_epoch = value

    def _discover(self) -> None:
        single = self.out / RUN_FILE
        found = {single: ""} if single.exists() or not rank_dirs(self.out) else {}
        found.update({d / RUN_FILE: f"rank {r}: " for r, d in rank_dirs(self.out).items()})
        for path, label in found.items():
            if path not in self.tails:
                stop = self.make_stop()
                if self._batches_per_epoch is not None:
                    stop.batches_per_epoch = self._batches_per_epoch
                self.tails[path] = (RecordFollower(path), stop, label)


def analyze_trial(out: Path, threshold: float) -> tuple[Analysis, str]:
    """The trial's analysis (written beside its record), and how to label its verdict.

    A distributed trial is judged by the rank that matters: one that stalled or crashed
    (or died, unless every rank did: then the harness stopped them all), whose own time is
    analysed; else the straggler the others wait for, on its own time (its batches less
    their wait in collectives, which is another rank's doing), as `dcnprobe analyze`
    gives it; else the slowest rank on its whole batch time, collective wait included:
    the trial is as slow as its slowest rank."""
    if not rank_dirs(out) or (out / RUN_FILE).exists():
        analysis = analyze_run(out, threshold)
        write_analysis(analysis)
        return analysis, ""
    result = analyze_ranks(out, threshold, every_rank=True)
    write_ranks_analysis(result)
    if not result.own:
        raise UsageError(f"no rank of {out} recorded a batch")
    ranks = result.ranks
    everyone_killed = all(ranks.runs[r].status == "incomplete" for r in ranks.ranks)
    stopped = [end.rank for end in ranks.stopped if end.rank in result.own
               and not (end.status == "incomplete" and everyone_killed)]
    stragglers = [r for r in result.judgement.stragglers if r in result.own]
    label = f"rank {{}} of {len(ranks.ranks)} ({{}}): "
    if stopped:
        return result.own[stopped[0]], label.format(stopped[0], "stopped first")
    if stragglers:
        return result.own[stragglers[0]], label.format(stragglers[0], "the others wait for it")
    whole = {r: analyze_run(ranks.runs[r], threshold) for r in result.own}
    slowest = max(whole, key=lambda r: whole[r].signals.timing.ratio or 0.0)
    return whole[slowest], label.format(slowest, "the slowest")
