"""Analysis of one run: is it slow, where did the time go, what memory grew, and why.

    analysis = analyze_run("runs/demo")       # a directory the probe wrote
    print(analysis.verdict)
    analysis.to_json()                        # what `dcnprobe analyze` writes to analysis.json

The signals (dcnprobe.analysis.signals) measure; the causes (dcnprobe.analysis.causes)
judge; this module puts the two into a verdict and a JSON document.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from dcnprobe.analysis.causes import CAUSE_IDS, Finding, advice_for, rank
from dcnprobe.analysis.formatting import format_interval, format_ratio
from dcnprobe.analysis.signals import Signals, measure
from dcnprobe.analysis.thresholds import DEFAULT_THRESHOLD
from dcnprobe.runs import Run, read_run

ANALYSIS_FILE = "analysis.json"
ADVICE_FOR_TOP = 3  # causes whose advice the verdict's reader gets

__all__ = ["CAUSE_IDS", "DEFAULT_THRESHOLD", "Analysis", "advice_for", "advice_lines", "analyze_run", "format_interval",
           "format_ratio", "write_analysis"]


@dataclass(frozen=True)
class Analysis:
    run: Run
    signals: Signals
    causes: tuple[Finding, ...]

    @property
    def slowdown(self) -> bool:
        return self.signals.slowdown

    @property
    def top_cause(self) -> str:
        return self.causes[0].id

    @property
    def verdict(self) -> str:
        return verdict_text(self)

    def to_json(self) -> dict[str, Any]:
        """The summary other tools read (slowdown, ratio, ratio_ci, grew, change_point_batch,
        outside_load, contended, causes, verdict), then every signal family as measured."""
        s = self.signals
        return {
            "slowdown": s.slowdown,
            "verdict": self.verdict,
            "status": s.status,
            "threshold": s.timing.threshold,
            "ratio": s.timing.ratio,
            "ratio_ci": list(s.timing.ratio_ci) if s.timing.ratio_ci else None,
            "grew": s.timing.grew,
            "change_point_batch": s.trend.change_step,
            # Other processes' CPU per epoch (share of all cores) and whether it, rather
            # than the run, explains the timing. The harness marks such trials contended.
            "outside_load": {str(e): round(v, 3) for e, v in s.contention.outside_load.items()},
            "contended": s.contention.contended,
            "damaged_lines": s.damaged_lines,
            "causes": [c.to_dict() for c in self.causes],
            "timing": _plain(s.timing),
            "contention": _plain(s.contention),
            "trend": _plain(s.trend),
            "epochs": _plain(s.epochs),
            "memory": _plain(s.memory.present()),
            "gc": _plain(s.gc),
            "cpu": _plain(s.cpu),
            "fds": _plain(s.fds),
            "cache_clearing": _plain(s.cache),
            "shapes": _plain(s.shapes),
        }


def _plain(value: Any) -> Any:
    """Dataclasses, tuples and numpy scalars as JSON-ready values; dict keys as strings."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


def analyze_run(run: Run | str | Path, threshold: float = DEFAULT_THRESHOLD) -> Analysis:
    run = run if isinstance(run, Run) else read_run(run)
    signals = measure(run, threshold)
    return Analysis(run, signals, tuple(rank(signals, run.path.parent)))


def write_analysis(analysis: Analysis, directory: Path | None = None) -> Path:
    directory = directory or analysis.run.path.parent
    path = directory / ANALYSIS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(analysis.to_json(), indent=2, default=float))
    os.replace(tmp, path)
    return path


def verdict_text(analysis: Analysis) -> str:
    s = analysis.signals
    t, c = s.timing, s.contention
    top = analysis.causes[0]
    # Something to explain: a slowdown, a hang, or a rise the interval cannot yet confirm.
    suspect = s.slowdown or t.slow_by_interval or s.status == "stalled"
    if not s.epochs:  # a run that ended (or was watched) before its first batch
        headline = "No batch was recorded, so there are no batch times to compare."
    elif t.ratio is None:
        headline = "Only one epoch was recorded, so there is no epoch-over-epoch comparison."
    else:
        low, high = t.ratio_ci
        measured = (f"epoch {t.compared_epoch} / epoch 1 {t.ratio_stat} batch time "
                    f"{format_ratio(t.ratio, low, high, t.confidence)}, threshold {t.threshold:g}")
        if s.slowdown:
            headline = f"Slow: {measured}."
        elif c.contended and t.slow_by_interval:
            headline = f"Not judged slow: other processes' CPU load explains the timing ({measured})."
        elif t.ratio_stat == "mean" and high > t.threshold:
            suspect = True
            headline = f"Possibly slow, not certain: {measured}; the interval reaches below the threshold."
        else:
            headline = f"Not slow: {measured}."
        if t.ratio_stat == "mean" and "median" in (t.ratios or {}):
            headline += (f" The median moved {format_ratio(*t.ratios['median'], t.confidence)}: the extra time comes "
                         "in bursts of long batches.")
        if s.slowdown and t.grew:
            headline += f" The time went to '{t.grew}'."
        if s.slowdown and s.trend.change_epoch_batch and t.ratio_stat == "median":
            epoch, batch = s.trend.change_epoch_batch
            headline += f" It starts at epoch {epoch}, batch {batch} ({s.trend.change.kind})."
    if c.contended:
        loads = ", ".join(f"epoch {e} {v:.0%}" for e, v in sorted(c.outside_load.items()))
        headline += (f" Other processes used CPU during the run ({loads} of all cores): rerun on a quiet machine "
                     "before trusting these timings.")
    if s.status == "stalled":
        headline = "Stalled: the run stopped making progress and was stopped. " + headline
    if s.damaged_lines:
        lines = "line" if s.damaged_lines == 1 else "lines"
        headline += f" ({s.damaged_lines} damaged {lines} of the record skipped.)"
    if top.id == "none":
        return headline + " No cause stands out."
    if not suspect:  # a finding without a slowdown is no cause of one: say what was seen
        return headline + f" Seen all the same: {top.id} - {top.evidence[0]}."
    return headline + f" Most likely cause: {top.id} - {top.evidence[0]}."


def advice_lines(analysis: Analysis, top: int = ADVICE_FOR_TOP) -> list[tuple[str, str]]:
    """(cause, what to do) for the top causes that have advice."""
    return [(f.id, f.advice) for f in analysis.causes[:top] if f.advice and f.id != "none"]
