"""Analysis of one run: is it slow, where did the time go, what memory grew, and why.

    analysis = analyze_run("runs/demo")       # a directory the probe wrote
    print(analysis.verdict)
    analysis.to_json()                        # what `dcnprobe analyze` writes to analysis.json
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dcnprobe.analysis.advice import advice_for
from dcnprobe.analysis.causes import CAUSE_IDS, Finding, rank
from dcnprobe.analysis.formatting import format_interval, format_ratio
from dcnprobe.analysis.signals import Signals, measure
from dcnprobe.analysis.thresholds import DEFAULT_THRESHOLD
from dcnprobe.records import Run, read_run

ANALYSIS_FILE = "analysis.json"
ADVICE_FOR_TOP = 3  # causes whose advice the verdict's reader gets

__all__ = ["CAUSE_IDS", "DEFAULT_THRESHOLD", "Analysis", "advice_for", "advice_lines", "analyze_run", "format_interval",
           "format_ratio", "write_analysis"]


@dataclass
class Analysis:
    run: Run
    signals: Signals
    causes: list[Finding]

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
        s = self.signals
        epoch_batch = s.change_epoch_batch
        return {
            "slowdown": s.slowdown,
            # Other processes' CPU per epoch (share of all cores) and whether it, rather
            # than the run, explains the timing. The harness marks such trials contended.
            "outside_load": {str(e): round(v, 3) for e, v in s.outside_load.items()},
            "contended": s.contended,
            "contention_ratio": s.contention_ratio,
            "ratio": s.ratio,
            "ratio_ci": list(s.ratio_ci) if s.ratio_ci else None,
            "ratio_stat": s.ratio_stat,
            "ratios": {k: list(v) for k, v in s.ratios.items()},
            "confidence": s.confidence,
            "threshold": s.threshold,
            "compared_epoch": s.compared_epoch,
            "change_point_batch": s.change_step,
            "change_point": {"epoch": epoch_batch[0], "batch": epoch_batch[1], "kind": s.change.kind,
                             "direction": s.change.direction, "stayed": s.change_stayed} if epoch_batch else None,
            "grew": s.grew,
            "phase_growth_s": s.phase_growth,
            "causes": [c.to_dict() for c in self.causes],
            "verdict": self.verdict,
            "status": s.status,
            "epochs": [
                {"epoch": e.epoch, "batches": e.batches, "median_s": e.times.median, "p90_s": e.times.p90,
                 "max_s": e.times.max, "phases_median_s": e.phases, "gc_share": e.gc_share,
                 "worker_cpu_per_batch_s": e.worker_cpu_per_batch, "first_wait_s": e.first_wait_s,
                 "between_epochs_s": e.between_epochs_s, "threads": e.threads, "system_share": e.system_share,
                 "involuntary_per_s": e.involuntary_per_s, "utilisation": e.utilisation,
                 "outside_load": e.outside_load, "open_fds": e.open_fds, "cpu_freq_mhz": e.cpu_freq_mhz,
                 "bursts": e.bursts.__dict__ if e.bursts else None}
                for e in s.epochs
            ],
            "memory": s.memory,
            "gc": {k: (v.__dict__ if hasattr(v, "__dict__") else v) for k, v in s.gc.items()},
            "cpu": s.cpu,
            "cache_clearing": {"share": s.cache_clear_share, "clears": s.cache_clears,
                               "after_clear_s": s.cache_clear_after_s},
            "fds": s.fds,
        }


def analyze_run(run: Run | str | Path, threshold: float = DEFAULT_THRESHOLD) -> Analysis:
    run = run if isinstance(run, Run) else read_run(run)
    signals = measure(run, threshold)
    return Analysis(run, signals, rank(signals, run.path.parent))


def write_analysis(analysis: Analysis, directory: Path | None = None) -> Path:
    directory = directory or analysis.run.path.parent
    path = directory / ANALYSIS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(analysis.to_json(), indent=2, default=float))
    os.replace(tmp, path)
    return path


def verdict_text(analysis: Analysis) -> str:
    s = analysis.signals
    top = analysis.causes[0]
    # Something to explain: a slowdown, a hang, or a rise the interval cannot yet confirm.
    suspect = s.slowdown or s.measured_slowdown or s.status == "stalled"
    if not s.epochs:  # a run that ended (or was watched) before its first batch
        headline = "No batch was recorded, so there are no batch times to compare."
    elif s.ratio is None:
        headline = "Only one epoch was recorded, so there is no epoch-over-epoch comparison."
    else:
        low, high = s.ratio_ci
        measured = (f"epoch {s.compared_epoch} / epoch 1 {s.ratio_stat} batch time "
                    f"{format_ratio(s.ratio, low, high, s.confidence)}, threshold {s.threshold:g}")
        if s.slowdown:
            headline = f"Slow: {measured}."
        elif s.contended and s.measured_slowdown:
            headline = f"Not judged slow: other processes' CPU load explains the timing ({measured})."
        elif s.ratio_stat == "mean" and high > s.threshold:
            suspect = True
            headline = f"Possibly slow, not certain: {measured}; the interval reaches below the threshold."
        else:
            headline = f"Not slow: {measured}."
        if s.ratio_stat == "mean" and "median" in s.ratios:
            median = s.ratios["median"]
            headline += (f" The median moved {format_ratio(*median, s.confidence)}: the extra time comes in bursts "
                         "of long batches.")
        if s.slowdown and s.grew:
            headline += f" The time went to '{s.grew}'."
        if s.slowdown and s.change_epoch_batch and s.ratio_stat == "median":
            epoch, batch = s.change_epoch_batch
            headline += f" It starts at epoch {epoch}, batch {batch} ({s.change.kind})."
    if s.contended:
        loads = ", ".join(f"epoch {e} {v:.0%}" for e, v in sorted(s.outside_load.items()))
        headline += (f" Other processes used CPU during the run ({loads} of all cores): rerun on a quiet machine "
                     "before trusting these timings.")
    if s.status == "stalled":
        headline = "Stalled: the run stopped making progress and was stopped. " + headline
    if top.id == "none":
        return headline + " No cause stands out."
    if not suspect:  # a finding without a slowdown is no cause of one: say what was seen
        return headline + f" Seen all the same: {top.id} - {top.evidence[0]}."
    return headline + f" Most likely cause: {top.id} - {top.evidence[0]}."


def advice_lines(analysis: Analysis, top: int = ADVICE_FOR_TOP) -> list[tuple[str, str]]:
    """(cause, what to do) for the top causes that have advice."""
    return [(f.id, f.advice) for f in analysis.causes[:top] if f.advice and f.id != "none"]
