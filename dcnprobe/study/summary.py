"""The study's numbers, from the trials' metrics: per preset over seeds, deltas between
presets paired by seed, and the report's criteria. Pure functions over data objects; the
reader (dcnprobe.study.reader) loads the trials' summary.json files."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dcnprobe.study.plan import Criteria
from dcnprobe.study.stats import Estimate, estimate, paired_differences

# The per-epoch metrics of the built-in trainer (model.trainer.EpochMetrics) the study reads.
AT_BEST = ("val_auc", "train_auc", "gap", "gate_mean", "train_loss", "val_loss")
PER_EPOCH = ("val_auc", "gate_mean")
DELTA_METRICS = ("val_auc", "gate_mean")  # the report's delta analysis compares these two


@dataclass
class SeedRun:
    """One trial's metrics: its summary.json epochs (a stopped trial has fewer)."""

    preset: str
    seed: int
    planned_epochs: int
    epochs: list[dict[str, Any]] = field(default_factory=list)
    hyperparams: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.epochs) >= self.planned_epochs

    @property
    def best(self) -> dict[str, Any] | None:
        """The epoch with the highest val AUC (the earliest of equals, as the trainer picks)."""
        scored = [e for e in self.epochs if _finite(e.get("val_auc"))]
        return max(scored, key=lambda e: e["val_auc"]) if scored else None


@dataclass
class PresetSummary:
    preset: str
    hyperparams: dict[str, Any]
    seeds: list[int]  # the seeds with complete metrics: the statistics are over these
    excluded: dict[int, str]  # seed -> why it is not in the statistics
    at_best: dict[str, Estimate | None]  # metric at each seed's best epoch
    best_epochs: dict[int, int]  # best epoch -> how many seeds
    gate_range: tuple[float, float] | None  # lowest and highest gate over seeds, at the best epoch
    last_gap: Estimate | None  # the gap at the last epoch: the overfitting trajectory's end
    per_epoch: dict[str, list[list[float]]]  # metric -> epoch -> values over seeds (plots)
    per_seed: dict[str, dict[int, float]]  # metric at best -> seed -> value (paired deltas)

    @property
    def best_epoch_median(self) -> float | None:
        epochs = [e for e, n in self.best_epochs.items() for _ in range(n)]
        return statistics.median(epochs) if epochs else None


@dataclass
class Delta:
    metric: str
    base: str  # preset a
    other: str  # preset b: the delta is b - a, seed by seed
    differences: dict[int, float]
    estimate: Estimate | None


@dataclass
class Check:
    criterion: str
    target: str
    value: str
    passed: bool | None  # None: not judged (no target given, or the study cannot tell)


@dataclass
class StudySummary:
    presets: list[PresetSummary]
    deltas: list[Delta]
    checks: dict[str, list[Check]]
    criteria: Criteria
    epochs: int


def summarize_preset(preset: str, runs: Sequence[SeedRun]) -> PresetSummary:
    complete = [r for r in runs if r.complete and r.best is not None]
    excluded = {r.seed: f"{len(r.epochs)} of {r.planned_epochs} epochs" for r in runs if r not in complete}
    bests = {r.seed: r.best for r in complete}
    per_seed = {m: {seed: float(best[m]) for seed, best in bests.items()} for m in AT_BEST}
    at_best = {m: estimate(list(values.values())) for m, values in per_seed.items()}
    gate_range = ((min(b["gate_min"] for b in bests.values()), max(b["gate_max"] for b in bests.values()))
                  if bests else None)
    epochs = max((r.planned_epochs for r in runs), default=0)
    per_epoch = {m: [[float(r.epochs[i][m]) for r in complete] for i in range(epochs)] for m in PER_EPOCH}
    return PresetSummary(
        preset=preset,
        hyperparams=next((r.hyperparams for r in runs if r.hyperparams), {}),
        seeds=[r.seed for r in complete],
        excluded=excluded,
        at_best=at_best,
        best_epochs=dict(sorted(Counter(int(b["epoch"]) for b in bests.values()).items())),
        gate_range=gate_range,
        last_gap=estimate([r.epochs[-1]["gap"] for r in complete]),
        per_epoch=per_epoch,
        per_seed=per_seed,
    )


def paired_deltas(presets: Sequence[PresetSummary]) -> list[Delta]:
    """b - a for every pair of presets, a listed before b, seed by seed."""
    deltas = []
    for i, a in enumerate(presets):
        for b in presets[i + 1:]:
            for metric in DELTA_METRICS:
                differences = paired_differences(a.per_seed[metric], b.per_seed[metric])
                deltas.append(Delta(metric, a.preset, b.preset, differences, estimate(list(differences.values()))))
    return deltas


def check(summary: PresetSummary, criteria: Criteria, epochs: int) -> list[Check]:
    """The report's success criteria, on the means over seeds (with how many seeds meet each)."""
    n = len(summary.seeds)
    checks = []
    auc = summary.at_best["val_auc"]
    meets = sum(v >= criteria.min_val_auc for v in summary.per_seed["val_auc"].values())
    checks.append(Check("best val AUC", f">= {criteria.min_val_auc:g}", _value(auc, f"{meets}/{n} seeds"),
                        None if auc is None else auc.mean >= criteria.min_val_auc))
    gap = summary.at_best["gap"]
    healthy = sum(criteria.gap_healthy(v) for v in summary.per_seed["gap"].values())
    target = f"{criteria.gap_low:g} to {criteria.gap_high:g}" + (", or negative" if criteria.negative_gap_ok else "")
    checks.append(Check("train-val gap at best", target, _value(gap, f"{healthy}/{n} seeds"),
                        None if gap is None else criteria.gap_healthy(gap.mean)))
    above = sum(v < 0 for v in summary.per_seed["gap"].values())
    checks.append(Check("val AUC above train AUC at best (generalization)", "gap < 0", _value(gap, f"{above}/{n} seeds"),
                        None if gap is None else gap.mean < 0))
    last = summary.last_gap
    checks.append(Check("no overfitting: gap at the last epoch", f"<= {criteria.gap_high:g}", _value(last),
                        None if last is None or epochs < 2 else last.mean <= criteria.gap_high))
    median = summary.best_epoch_median
    reachable = epochs >= criteria.best_epoch_low
    spread = ", ".join(f"E{e}: {c}" for e, c in summary.best_epochs.items())
    checks.append(Check("best epoch moves off epoch 1", f"median in {criteria.best_epoch_low}-{criteria.best_epoch_high}",
                        f"median {median:g} ({spread})" if median is not None else "-",
                        None if median is None or not reachable
                        else criteria.best_epoch_low <= median <= criteria.best_epoch_high))
    gate = summary.at_best["gate_mean"]
    if criteria.gate_low is None and criteria.gate_high is None:
        checks.append(Check("gate mean at best", "none in the report (reported, not judged)", _value(gate), None))
    else:
        low = criteria.gate_low if criteria.gate_low is not None else -math.inf
        high = criteria.gate_high if criteria.gate_high is not None else math.inf
        checks.append(Check("gate mean at best", f"{low:g} to {high:g}", _value(gate),
                            None if gate is None else low <= gate.mean <= high))
    return checks


def summarize_study(runs: Sequence[SeedRun], presets: Sequence[str], criteria: Criteria, epochs: int) -> StudySummary:
    summaries = [summarize_preset(p, [r for r in runs if r.preset == p]) for p in presets]
    return StudySummary(summaries, paired_deltas(summaries), {s.preset: check(s, criteria, epochs) for s in summaries},
                        criteria, epochs)


def _value(e: Estimate | None, detail: str = "") -> str:
    if e is None:
        return "-"
    text = f"{e.mean:.4f}" + (f" ± {e.std:.4f}" if e.std is not None else "")
    return text + (f" ({detail})" if detail else "")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
