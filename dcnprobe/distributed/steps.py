"""The quantities ranks are compared by, per batch and per epoch.

Per batch of each rank:
    total       the whole batch
    collective  blocked in collectives, waiting for the other ranks (0 where not recorded)
    data_wait   blocked on its own DataLoader
    own         total - collective: the rank's own work, which decides when it reaches the
                next collective
    compute     own - data_wait: its own work apart from loading

Matched by step (all ranks take the same steps in synchronous data-parallel training),
the rank that waits least in a step's collectives arrived last; the others waited for it.
`held` is that wait, put on the rank that arrived last: per step, the median over the
other ranks of (their collective - its collective).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from dcnprobe.hooks import COLLECTIVE, DATA_WAIT
from dcnprobe.runs import Run

QUANTITIES = ("total", COLLECTIVE, DATA_WAIT, "own", "compute")


def step_frame(run: Run) -> pd.DataFrame:
    """One row per batch of a rank: step, epoch, batch and QUANTITIES."""
    batches = run.batches
    if batches.empty or "total" not in batches:
        return pd.DataFrame(columns=["step", "epoch", "batch", *QUANTITIES])
    frame = pd.DataFrame({
        "step": batches["step"].astype(int) if "step" in batches else np.arange(len(batches)),
        "epoch": batches["epoch"].astype(int),
        "batch": batches["batch"].astype(int) if "batch" in batches else 0,
        "total": batches["total"].astype(float),
    })
    for name in (COLLECTIVE, DATA_WAIT):
        frame[name] = batches[name].astype(float).fillna(0.0) if name in batches else 0.0
    frame["own"] = frame["total"] - frame[COLLECTIVE]
    frame["compute"] = frame["own"] - frame[DATA_WAIT]
    return frame.reset_index(drop=True)


def own_time_run(run: Run) -> Run:
    """The rank's record with each batch's collective wait taken out of its total: its
    own work, what a single-run analysis of the rank should judge. The wait is another
    rank's doing; left in, a rank that only waited reads as slow in its own code."""
    if COLLECTIVE not in run.batches:
        return run
    batches = run.batches.copy()
    batches["total"] = batches["total"] - batches[COLLECTIVE].fillna(0.0)
    return replace(run, batches=batches.drop(columns=[COLLECTIVE]))


def records_collectives(run: Run) -> bool:
    """The rank's batches carry the collective phase (it was measured)."""
    return COLLECTIVE in run.batches and run.batches[COLLECTIVE].notna().any()


def matched_steps(frames: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """The steps every rank recorded, one row each: its epoch (as the lowest rank counts
    it), each rank's collective (`collective_<r>`), the rank that arrived last (`last`)
    and how long the others waited for it (`held`)."""
    ranks = sorted(frames)
    joined = None
    for rank in ranks:
        part = frames[rank][["step", "epoch", COLLECTIVE]].rename(
            columns={COLLECTIVE: f"{COLLECTIVE}_{rank}", "epoch": f"epoch_{rank}"})
        joined = part if joined is None else joined.merge(part, on="step", how="inner")
    if joined is None or joined.empty:
        return pd.DataFrame(columns=["step", "epoch", "last", "held"])
    joined["epoch"] = joined[f"epoch_{ranks[0]}"]
    waits = joined[[f"{COLLECTIVE}_{r}" for r in ranks]].to_numpy(float)
    last = waits.argmin(axis=1)
    if len(ranks) > 1:
        others = waits - waits[np.arange(len(waits)), last][:, None]
        others[np.arange(len(waits)), last] = np.nan  # the last rank did not wait for itself
        held = np.nanmedian(others, axis=1)
    else:
        held = np.zeros(len(waits))
    joined["last"] = np.asarray(ranks)[last]
    joined["held"] = held
    return joined.sort_values("step").reset_index(drop=True)


@dataclass(frozen=True)
class EpochSummary:
    """One rank's epoch: median seconds per batch, and its part in the others' waiting."""

    epoch: int
    batches: int
    median_batch_s: float
    median_collective_s: float
    median_data_wait_s: float
    median_compute_s: float
    median_own_s: float
    last_share: float | None  # share of the matched steps at which it arrived last
    held_others_s: float | None  # the others' wait for it, per matched step (mean)

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def epoch_summaries(rank: int, frame: pd.DataFrame, matched: pd.DataFrame) -> list[EpochSummary]:
    """Medians are robust to an epoch's few warm-up batches, so none are dropped."""
    out = []
    for epoch, group in frame.groupby("epoch", sort=True):
        steps = matched[matched["epoch"] == epoch] if not matched.empty else matched
        mine = steps["last"] == rank if len(steps) else None
        out.append(EpochSummary(
            epoch=int(epoch), batches=len(group),
            median_batch_s=float(group["total"].median()),
            median_collective_s=float(group[COLLECTIVE].median()),
            median_data_wait_s=float(group[DATA_WAIT].median()),
            median_compute_s=float(group["compute"].median()),
            median_own_s=float(group["own"].median()),
            last_share=float(mine.mean()) if mine is not None else None,
            held_others_s=float(steps["held"].where(mine, 0.0).mean()) if mine is not None else None,
        ))
    return out


@dataclass(frozen=True)
class Shift:
    """How much a median moved from one epoch to another, and whether that is more than
    noise: the move exceeds `z` standard errors of a difference of medians (from each
    side's median absolute deviation) and `floor` seconds."""

    before: float
    after: float
    se: float
    significant: bool

    @property
    def delta(self) -> float:
        return self.after - self.before


def median_shift(before: np.ndarray, after: np.ndarray, *, z: float, floor: float) -> Shift:
    before, after = np.asarray(before, float), np.asarray(after, float)
    if before.size == 0 or after.size == 0:
        return Shift(float("nan"), float("nan"), float("inf"), False)
    se = float(np.sqrt(_median_se(before) ** 2 + _median_se(after) ** 2))
    delta = float(np.median(after) - np.median(before))
    return Shift(float(np.median(before)), float(np.median(after)), se, delta > max(z * se, floor))


def _median_se(values: np.ndarray) -> float:
    # Standard error of a median under normal noise: 1.2533 sigma / sqrt(n), with sigma
    # from the MAD so that a few outlying batches (GC, a checkpoint) do not inflate it.
    sigma = 1.4826 * float(np.median(np.abs(values - np.median(values))))
    return 1.2533 * sigma / np.sqrt(values.size)
