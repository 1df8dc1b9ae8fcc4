"""Which rank holds the others back, from measurements only.

In synchronous data-parallel training every rank leaves a step's collectives together,
so a rank that gets slower in its own work makes every other rank slower too: they wait
for it in the collectives. Comparing a later epoch with epoch 1, per rank:

    straggler  its own time (total - collective) grew; its collective wait did not
    waiter     its collective wait grew; its own time did not (it waits for a straggler),
               or grew by less than it waits (a shared part besides the straggler's)

and per step, the others' added wait is put on the rank that arrived last (steps.py).
A rank's score is the share of the run's slowdown that the others spent waiting for it,
over and above epoch 1: about 1 for a lone straggler, about 0 for every rank when all
slow down alike. A straggler is named only when stragglers and waiters account for every
rank and the stragglers' scores explain at least STRAGGLER_SHARE of the slowdown. All
ranks slower in their own work with nobody waiting longer is a shared cause; every
rank's collectives slower with no rank arriving later is the communication itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from dcnprobe.distributed.steps import Shift, median_shift
from dcnprobe.hooks import COLLECTIVE, DATA_WAIT

SHIFT_Z = 3.0  # a median moved by more than this many standard errors is not noise...
SHIFT_FLOOR_SHARE = 0.05  # ...and by more than this share of epoch 1's batch time
RATIO_Z = 2.0  # the run is slow when its ratio, less this many standard errors, is above the threshold
STRAGGLER_SHARE = 0.5  # stragglers' scores together explain at least this share of the slowdown
RANK_SCORE_MIN = 0.2  # and each named straggler at least this share
MIN_STEPS = 10  # matched steps an epoch needs to be compared

# Verdict kinds.
NOT_SLOW, STRAGGLER, SHARED, COMMUNICATION, UNMEASURED, INCONCLUSIVE, ONE_EPOCH = (
    "not-slow", "straggler", "shared", "communication", "unmeasured", "inconclusive", "one-epoch")


@dataclass(frozen=True)
class RankChange:
    """One rank, compared epoch against epoch 1 (medians per batch, seconds)."""

    rank: int
    total: Shift
    collective: Shift
    own: Shift
    compute: Shift
    data_wait: Shift
    held_before_s: float  # the others' wait for it per step, epoch 1
    held_after_s: float  # the same, compared epoch
    last_share: float  # share of the compared epoch's steps at which it arrived last
    score: float = 0.0

    @property
    def role(self) -> str:
        if self.own.significant and not self.collective.significant:
            return "slowed"
        if self.collective.significant and not self.own.significant:
            return "waited"
        if self.own.significant and self.collective.significant:
            return "both"
        return "steady"

    def to_dict(self) -> dict:
        def pair(s: Shift) -> dict:
            return {"before_s": round(s.before, 6), "after_s": round(s.after, 6), "grew": s.significant}
        return {"rank": self.rank, "role": self.role, "score": round(self.score, 3),
                "batch": pair(self.total), "collective": pair(self.collective), "own": pair(self.own),
                "compute": pair(self.compute), "data_wait": pair(self.data_wait),
                "held_others_s": [round(self.held_before_s, 6), round(self.held_after_s, 6)],
                "last_share": round(self.last_share, 3)}


@dataclass(frozen=True)
class Judgement:
    kind: str
    baseline_epoch: int | None = None
    compared_epoch: int | None = None
    ratio: float | None = None  # the run's median batch time, compared epoch / epoch 1 (slowest rank)
    ratio_low: float | None = None
    changes: dict[int, RankChange] = field(default_factory=dict)
    stragglers: list[int] = field(default_factory=list)
    collectives_measured: bool = True

    @property
    def scores(self) -> dict[int, float]:
        return {r: c.score for r, c in self.changes.items()}


def judge(frames: dict[int, pd.DataFrame], matched: pd.DataFrame, threshold: float,
          collectives_measured: bool) -> Judgement:
    """The verdict kind, with every rank's change and score (see the module doc)."""
    counts = matched.groupby("epoch").size() if not matched.empty else pd.Series(dtype=int)
    epochs = [int(e) for e, n in counts.items() if n >= MIN_STEPS]
    if len(epochs) < 2:
        return Judgement(ONE_EPOCH, epochs[0] if epochs else None, collectives_measured=collectives_measured)
    base, later = epochs[0], epochs[1:]
    steps = {e: set(matched.loc[matched["epoch"] == e, "step"]) for e in epochs}

    def totals(epoch: int) -> float:
        return max(float(f.loc[f["step"].isin(steps[epoch]), "total"].median()) for f in frames.values())

    compared = max(later, key=totals)  # the slowest later epoch, by its slowest rank
    floor = SHIFT_FLOOR_SHARE * totals(base)
    changes = {}
    for rank, frame in frames.items():
        before = frame[frame["step"].isin(steps[base])]
        after = frame[frame["step"].isin(steps[compared])]
        shift = {q: median_shift(before[q], after[q], z=SHIFT_Z, floor=floor)
                 for q in ("total", COLLECTIVE, "own", "compute", DATA_WAIT)}
        changes[rank] = RankChange(rank, shift["total"], shift[COLLECTIVE], shift["own"], shift["compute"],
                                   shift[DATA_WAIT], *_held(matched, rank, base, compared))
    slowest = max(changes.values(), key=lambda c: c.total.after / c.total.before)
    ratio = slowest.total.after / slowest.total.before
    ratio_low = (slowest.total.delta - RATIO_Z * slowest.total.se) / slowest.total.before + 1
    judgement = dict(baseline_epoch=base, compared_epoch=compared, ratio=ratio, ratio_low=ratio_low,
                     collectives_measured=collectives_measured)
    if ratio_low <= threshold:
        return Judgement(NOT_SLOW, changes=changes, **judgement)
    if not collectives_measured and len(frames) > 1:
        return Judgement(UNMEASURED, changes=changes, **judgement)
    slowdown = float(np.median([c.total.delta for c in changes.values()]))
    scored = {r: _scored(c, slowdown) for r, c in changes.items()}
    roles = {r: c.role for r, c in scored.items()}
    # A rank whose collective wait grew a little too, but whose own time grew more and
    # whom the others wait for, is a straggler: the others arrive first and wait for it,
    # and its own small extra wait is the others' noise (or their share of a shared part).
    leads = {r for r, role in roles.items() if role == "both" and scored[r].score >= RANK_SCORE_MIN
             and scored[r].own.delta > scored[r].collective.delta}
    slowed = [r for r, role in roles.items() if role == "slowed" or r in leads]
    waited = [r for r, role in roles.items() if role == "waited"]
    # A rank that slowed a little itself and waits for a slower one is still a waiter:
    # the part it waits is the straggler's doing, its own growth is a shared part.
    waiters = waited + [r for r, role in roles.items() if role == "both" and r not in leads]
    named = [r for r in slowed if scored[r].score >= RANK_SCORE_MIN]
    if (named and waiters and len(slowed) + len(waiters) == len(roles)
            and sum(scored[r].score for r in named) >= STRAGGLER_SHARE):
        named.sort(key=lambda r: scored[r].score, reverse=True)
        return Judgement(STRAGGLER, changes=scored, stragglers=named, **judgement)
    if all(c.own.significant for c in scored.values()):  # some may also wait a little for the slowest
        return Judgement(SHARED, changes=scored, **judgement)
    if len(waited) == len(roles):
        return Judgement(COMMUNICATION, changes=scored, **judgement)
    return Judgement(INCONCLUSIVE, changes=scored, **judgement)


def _held(matched: pd.DataFrame, rank: int, base: int, compared: int) -> tuple[float, float, float]:
    """The others' wait for `rank` per step in epoch 1 and the compared epoch, and the
    share of the compared epoch's steps at which it arrived last."""
    def held(epoch: int) -> tuple[float, float]:
        steps = matched[matched["epoch"] == epoch]
        mine = steps["last"] == rank
        return float(steps["held"].where(mine, 0.0).mean()), float(mine.mean())
    before, _ = held(base)
    after, share = held(compared)
    return before, after, share


def _scored(change: RankChange, slowdown: float) -> RankChange:
    score = (change.held_after_s - change.held_before_s) / slowdown if slowdown > 0 else 0.0
    return replace(change, score=float(min(1.0, max(0.0, score))))
