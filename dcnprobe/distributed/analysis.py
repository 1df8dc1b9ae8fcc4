"""Analysis of a run of several ranks: is it slow, which rank holds the others back (and
with what score), and that rank's own cause through the same analysis as a single run.

    result = analyze_ranks("runs/ddp")          # RUN/rank0/run.jsonl, RUN/rank1/...
    print(result.verdict)
    write_ranks_analysis(result)                # RUN/analysis.json and RUN/rankN/analysis.json
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dcnprobe.analysis import ANALYSIS_FILE, DEFAULT_THRESHOLD, Analysis, analyze_run
from dcnprobe.distributed import straggler as sg
from dcnprobe.distributed.reader import RankRuns, read_ranks
from dcnprobe.distributed.steps import (
    EpochSummary,
    epoch_summaries,
    matched_steps,
    median_shift,
    own_time_run,
    records_collectives,
    step_frame,
)
from dcnprobe.hooks import DATA_WAIT, PHASES

IMBALANCE_SHARE = 0.10  # a rank the others wait for this share of a batch, every epoch, is worth a line
# ... when it also arrives last more often than chance would have it (one-sided binomial test
# against 1/world_size): with noisy collectives, some rank is last at every step, and the
# others' wait for it is never zero, on a perfectly balanced run too.
IMBALANCE_P = 0.001
OWN_PHASES = (DATA_WAIT, *PHASES, "other")  # where a straggler's own time can go


@dataclass
class RanksAnalysis:
    ranks: RankRuns
    judgement: sg.Judgement
    summaries: dict[int, list[EpochSummary]]
    threshold: float
    # Single-run analyses of each rank's own time (batch total less collective wait), by
    # rank; `explains`: the ranks the verdict speaks of (stragglers, every rank of a shared
    # slowdown, ranks that died), whose causes are the run's.
    own: dict[int, Analysis] = field(default_factory=dict)
    explains: list[int] = field(default_factory=list)
    written: dict[int, Path] = field(default_factory=dict)  # where write_ranks_analysis put them

    @property
    def slowdown(self) -> bool:
        return self.judgement.kind not in (sg.NOT_SLOW, sg.ONE_EPOCH)

    @property
    def straggler(self) -> int | None:
        """The one rank named, or None (no straggler, or several ranks together)."""
        named = self.judgement.stragglers
        return named[0] if len(named) == 1 else None

    @property
    def verdict(self) -> str:
        return " ".join(part for part in (self._failure(), self._headline(), self._finding()) if part)

    def straggler_evidence(self, rank: int) -> list[str]:
        j = self.judgement
        change = j.changes[rank]
        lines = [f"its own time per batch grew {_ms(change.own.before)} -> {_ms(change.own.after)} (compute "
                 f"{_ms(change.compute.before)} -> {_ms(change.compute.after)}, data wait "
                 f"{_ms(change.data_wait.before)} -> {_ms(change.data_wait.after)}) while its collective wait "
                 f"stayed {_ms(change.collective.before)} -> {_ms(change.collective.after)}",
                 f"the other ranks waited for it {_ms(change.held_before_s)} -> {_ms(change.held_after_s)} per "
                 f"step; it arrived last at the collectives in {change.last_share:.0%} of epoch "
                 f"{j.compared_epoch}'s steps; score {change.score:.2f} (share of the run's "
                 f"+{_ms(self._slowdown_s())} per batch spent waiting for it)"]
        for other, c in sorted(j.changes.items()):
            if other not in j.stragglers:
                lines.append(f"rank {other} waited: collective {_ms(c.collective.before)} -> "
                             f"{_ms(c.collective.after)} per batch, compute {_ms(c.compute.before)} -> "
                             f"{_ms(c.compute.after)}" + (" (its own work grew too)" if c.own.significant
                                                          else " (did not grow)"))
        grew = self.own_growth(rank)
        if grew:
            phase, seconds = next(iter(grew.items()))
            lines.append(f"its extra time is in '{phase}' (+{_ms(seconds)} per batch)")
        return lines

    def own_growth(self, rank: int) -> dict[str, float]:
        """Seconds per batch each phase of `rank` added in the compared epoch, largest
        first; only phases that grew beyond noise."""
        j = self.judgement
        batches = self.ranks.runs[rank].batches
        if j.compared_epoch is None or batches.empty:
            return {}
        before = batches[batches["epoch"] == j.baseline_epoch]
        after = batches[batches["epoch"] == j.compared_epoch]
        floor = sg.SHIFT_FLOOR_SHARE * float(before["total"].median())
        grew = {}
        for phase in OWN_PHASES:
            if phase in batches:
                shift = median_shift(before[phase].dropna(), after[phase].dropna(), z=sg.SHIFT_Z, floor=floor)
                if shift.significant:
                    grew[phase] = shift.delta
        return dict(sorted(grew.items(), key=lambda item: item[1], reverse=True))

    # -- text --------------------------------------------------------------------------

    def _failure(self) -> str:
        r = self.ranks
        stopped = r.stopped
        parts = [end.describe() for end in stopped] + [f"rank {m} left no record" for m in r.missing]
        if not parts:
            return ""
        named = {end.rank for end in stopped}
        others = [r.end(k) for k in r.ranks if k not in named]
        kept = "; the other ranks' records are kept" + (
            " (" + ", ".join(f"rank {e.rank} {e.status} at epoch {e.epoch}, batch {e.batch}" for e in others) + ")"
            if others else "")
        first = "Stalled: " if stopped and stopped[0].status == "stalled" else "Crashed: "
        return first + "; ".join(parts) + kept + "."

    def _headline(self) -> str:
        j = self.judgement
        count = f"{len(self.ranks.ranks)} rank{'s' if len(self.ranks.ranks) != 1 else ''}"
        if j.kind == sg.ONE_EPOCH:
            return (f"{count}: fewer than two epochs with {sg.MIN_STEPS} steps from every rank, so there is no "
                    "epoch-over-epoch comparison." + self._imbalance())
        measured = (f"epoch {j.compared_epoch} / epoch {j.baseline_epoch} median batch time {j.ratio:.2f}x on the "
                    f"slowest rank (at least {j.ratio_low:.2f}x), threshold {self.threshold:g}")
        if j.kind == sg.NOT_SLOW:
            return f"Not slow ({count}): {measured}." + self._imbalance()
        return f"Slow ({count}): {measured}."

    def _finding(self) -> str:
        j = self.judgement
        if j.kind == sg.UNMEASURED:
            return ("The records hold no collective time, so waiting for another rank cannot be told from a rank's "
                    "own work: no rank is named.")
        if j.kind == sg.STRAGGLER:
            one = len(j.stragglers) == 1
            named = " and ".join(f"rank {r} (score {j.changes[r].score:.2f})" for r in j.stragglers)
            text = (f"{'Straggler' if one else 'Stragglers'}: {named} {'holds' if one else 'hold'} the others "
                    "back: " + "; ".join(self._straggler_clause(r, "its" if one else f"rank {r}'s")
                                         for r in j.stragglers) + ".")
            shared = [f"rank {r} +{_ms(c.own.delta)}" for r, c in sorted(j.changes.items()) if c.role == "both"]
            if shared:
                text += f" Part of the slowdown is shared: the waiting ranks' own work grew too ({', '.join(shared)})."
            return text + " " + " ".join(self._own_cause(r) for r in j.stragglers)
        if j.kind == sg.SHARED and len(j.changes) == 1:  # one rank recorded: its own analysis says it all
            return self._own_cause(next(iter(j.changes)))
        if j.kind == sg.SHARED:
            grew = ", ".join(f"rank {r} +{_ms(c.own.delta)}" for r, c in sorted(j.changes.items()))
            text = (f"Every rank slowed in its own work ({grew} per batch): no straggler, the cause is shared. "
                    + self._shared_cause())
            most = max(j.changes.values(), key=lambda c: c.score)
            if most.score > 0 and most.collective.significant is False and any(
                    c.collective.significant for c in j.changes.values()):
                text += (f" Rank {most.rank} slowed more than the others: they wait "
                         f"+{_ms(most.held_after_s - most.held_before_s)} per step for it (score {most.score:.2f}).")
            return text
        if j.kind == sg.COMMUNICATION:
            grew = ", ".join(f"rank {r} +{_ms(c.collective.delta)}" for r, c in sorted(j.changes.items()))
            return (f"Every rank waits longer in collectives ({grew} per batch) while no rank's own work grew: the "
                    "communication itself got slower (interconnect, network, larger collectives), not a straggler.")
        if j.kind == sg.INCONCLUSIVE:
            roles = "; ".join(f"rank {r}: own {_signed(c.own.delta)}, collective {_signed(c.collective.delta)} "
                              f"(score {c.score:.2f})" for r, c in sorted(j.changes.items()))
            return f"No single rank clearly holds the others back ({roles} per batch)."
        return ""

    def _straggler_clause(self, rank: int, whose: str) -> str:
        c = self.judgement.changes[rank]
        return (f"{whose} own time per batch grew {_ms(c.own.before)} -> {_ms(c.own.after)} while {whose} "
                f"collective wait stayed {_ms(c.collective.before)} -> {_ms(c.collective.after)}, and the other "
                f"ranks' wait for it grew +{_ms(c.held_after_s - c.held_before_s)} per step")

    def _own_cause(self, rank: int) -> str:
        analysis = self.own.get(rank)
        if analysis is None:
            return ""
        top = analysis.causes[0]
        if top.id != "none":
            return f"Rank {rank}'s own cause: {top.id} - {top.evidence[0]}."
        grew = self.own_growth(rank)
        where = f"; its time went to '{next(iter(grew))}'" if grew else ""
        return f"Rank {rank}'s own record shows no cause from the catalogue{where}."

    def _shared_cause(self) -> str:
        tops = {r: self.own[r].causes[0] for r in self.explains if r in self.own}
        ids = {f.id for f in tops.values()}
        if len(ids) == 1 and "none" not in ids:
            top = next(iter(tops.values()))
            return f"Shared cause, on every rank: {top.id} - {top.evidence[0]}."
        return "Causes by rank: " + ", ".join(f"rank {r} {f.id}" for r, f in tops.items()) + "."

    def _imbalance(self) -> str:
        """A rank the others wait for in every epoch: a constant imbalance, not a slowdown."""
        lines = []
        world = len(self.summaries)
        for rank, epochs in sorted(self.summaries.items()):
            shares = [e.held_others_s / e.median_batch_s for e in epochs
                      if e.held_others_s is not None and e.median_batch_s > 0]
            by_chance = [e for e in epochs if e.last_share is None
                         or last_by_chance(e.last_share, e.batches, world) >= IMBALANCE_P]
            if shares and min(shares) >= IMBALANCE_SHARE and not by_chance:
                lines.append(f"rank {rank} ({min(shares):.0%}-{max(shares):.0%} of each batch)")
        return (" The other ranks wait for " + ", ".join(lines) + " in every epoch: a constant imbalance "
                "(uneven data or hardware), not a slowdown.") if lines else ""

    def _slowdown_s(self) -> float:
        return float(np.median([c.total.delta for c in self.judgement.changes.values()]))

    # -- json --------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        r, j = self.ranks, self.judgement
        named = [self._straggler_json(k) for k in j.stragglers]
        return {
            "kind": "distributed",
            "world_size": r.world_size,
            "ranks_recorded": r.ranks,
            "missing_ranks": r.missing,
            "status": r.status,
            "failed": [e.__dict__ for e in r.failed],
            "slowdown": self.slowdown,
            "judgement": j.kind,
            "baseline_epoch": j.baseline_epoch,
            "compared_epoch": j.compared_epoch,
            "ratio": j.ratio,
            "ratio_low": j.ratio_low,
            "threshold": self.threshold,
            "collectives_measured": j.collectives_measured,
            "scores": {str(k): round(v, 3) for k, v in j.scores.items()},
            "straggler": named[0] if len(named) == 1 else None,
            "stragglers": named,
            "shared": {"causes": {str(k): self.own[k].causes[0].id for k in self.explains if k in self.own}}
            if j.kind == sg.SHARED else None,
            "own_analysis_of": "each rank's own time: batch total less its collective wait",
            "verdict": self.verdict,
            "ranks": [self._rank_json(k) for k in r.ranks],
        }

    def _straggler_json(self, rank: int) -> dict[str, Any]:
        analysis = self.own.get(rank)
        top = analysis.causes[0] if analysis is not None else None
        return {"rank": rank, "score": round(self.judgement.changes[rank].score, 3),
                "evidence": self.straggler_evidence(rank), "grew": self.own_growth(rank),
                "cause": top.to_dict() if top is not None and top.id != "none" else None,
                "analysis": self._pointer(rank)}

    def _rank_json(self, rank: int) -> dict[str, Any]:
        info, end = self.ranks.infos[rank], self.ranks.end(rank)
        change = self.judgement.changes.get(rank)
        analysis = self.own.get(rank)
        return {"rank": rank, "host": info.host, "local_rank": info.local_rank, "t0_unix": info.t0_unix,
                "status": end.status, "last": {"epoch": end.epoch, "batch": end.batch, "step": end.step},
                "epochs": [e.to_dict() for e in self.summaries.get(rank, [])],
                "change": change.to_dict() if change is not None else None,
                "verdict": analysis.verdict if analysis is not None else None,
                "top_cause": analysis.causes[0].id if analysis is not None else None,
                "analysis": self._pointer(rank)}

    def _pointer(self, rank: int) -> str | None:
        path = self.written.get(rank)
        return str(path.relative_to(self.ranks.path)) if path is not None else None


def analyze_ranks(path: RankRuns | str | Path, threshold: float = DEFAULT_THRESHOLD,
                  every_rank: bool = False) -> RanksAnalysis:
    """Compare every rank's epochs and name the rank holding the others back, if any.
    Single-run analyses are run for the ranks the verdict speaks of (stragglers, every
    rank of a shared slowdown, ranks that died), or for all with every_rank."""
    ranks = path if isinstance(path, RankRuns) else read_ranks(path)
    frames = {r: step_frame(run) for r, run in ranks.runs.items()}
    matched = matched_steps(frames)
    measured = any(records_collectives(run) for run in ranks.runs.values())
    judgement = sg.judge(frames, matched, threshold, measured)
    summaries = {r: epoch_summaries(r, frames[r], matched) for r in ranks.ranks}
    explains = ranks.ranks if judgement.kind == sg.SHARED else list(judgement.stragglers)
    explains += [end.rank for end in ranks.stopped if end.rank not in explains]
    wanted = ranks.ranks if every_rank else sorted(explains)
    own = {r: analyze_run(own_time_run(ranks.runs[r]), threshold) for r in wanted
           if not ranks.runs[r].batches.empty}
    return RanksAnalysis(ranks, judgement, summaries, threshold, own, [r for r in explains if r in own])


def write_ranks_analysis(result: RanksAnalysis) -> Path:
    """RUN/rankN/analysis.json for each rank analysed, then RUN/analysis.json pointing to them."""
    for rank, analysis in result.own.items():
        result.written[rank] = _write_json(result.ranks.runs[rank].path.parent / ANALYSIS_FILE, {
            **analysis.to_json(), "rank": rank,
            "time_analysed": "own time: batch total less collective wait (the wait is another rank's doing)"})
    return _write_json(result.ranks.path / ANALYSIS_FILE, result.to_json())


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)
    return path


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _signed(seconds: float) -> str:
    return f"{seconds * 1000:+.0f} ms"


def last_by_chance(share: float, steps: int, world: int) -> float:
    """P(a rank arrives last at `share` of `steps` steps or more) when every rank is equally
    likely to be last: the one-sided binomial tail (normal approximation past 1,000 steps)."""
    if steps <= 0 or world <= 1:
        return 1.0
    p, k = 1.0 / world, round(share * steps)
    if steps > 1000:
        z = (k - 0.5 - steps * p) / math.sqrt(steps * p * (1 - p))
        return 0.5 * math.erfc(z / math.sqrt(2))
    return sum(math.comb(steps, i) * p**i * (1 - p) ** (steps - i) for i in range(k, steps + 1))
