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

from dcnprobe.analysis.causes import CAUSE_IDS, Finding, rank
from dcnprobe.analysis.signals import Signals, measure
from dcnprobe.records import Run, read_run

DEFAULT_THRESHOLD = 1.2
ANALYSIS_FILE = "analysis.json"

__all__ = ["CAUSE_IDS", "DEFAULT_THRESHOLD", "Analysis", "analyze_run", "write_analysis"]


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
            "ratio": s.ratio,
            "ratio_ci": list(s.ratio_ci) if s.ratio_ci else None,
            "ratio_stat": s.ratio_stat,
            "threshold": s.threshold,
            "compared_epoch": s.compared_epoch,
            "change_point_batch": s.change_step,
            "change_point": {"epoch": epoch_batch[0], "batch": epoch_batch[1], "kind": s.change.kind} if epoch_batch else None,
            "grew": s.grew,
            "phase_growth_s": s.phase_growth,
            "causes": [c.to_dict() for c in self.causes],
            "verdict": self.verdict,
            "status": s.status,
            "epochs": [
                {"epoch": e.epoch, "batches": e.batches, "median_s": e.times.median, "p90_s": e.times.p90,
                 "max_s": e.times.max, "phases_median_s": e.phases, "gc_share": e.gc_share,
                 "worker_cpu_per_batch_s": e.worker_cpu_per_batch}
                for e in s.epochs
            ],
            "memory": s.memory,
            "gc": {k: (v.__dict__ if hasattr(v, "__dict__") else v) for k, v in s.gc.items()},
            "cpu": s.cpu,
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
    if s.ratio is None:
        headline = "Only one epoch was recorded, so there is no epoch-over-epoch comparison."
    elif s.slowdown:
        low, high = s.ratio_ci
        headline = (f"Slow: epoch {s.compared_epoch} runs {s.ratio:.2f}x the {s.ratio_stat} batch time of epoch 1 "
                    f"(95% CI {low:.2f}-{high:.2f}, threshold {s.threshold:g}).")
        if s.ratio_stat == "mean":
            headline += " The median moved less: the slowdown comes in bursts of long batches."
        if s.grew:
            headline += f" The time went to '{s.grew}'."
        if s.change_epoch_batch:
            epoch, batch = s.change_epoch_batch
            headline += f" It starts at epoch {epoch}, batch {batch} ({s.change.kind})."
    else:
        low, high = s.ratio_ci
        headline = (f"Not slow: epoch {s.compared_epoch} / epoch 1 {s.ratio_stat} batch time {s.ratio:.2f} "
                    f"(95% CI {low:.2f}-{high:.2f}, threshold {s.threshold:g}).")
    if s.status == "stalled":
        headline = "Stalled: the run stopped making progress and was stopped. " + headline
    if top.id == "none":
        return headline + " No cause stands out."
    return headline + f" Most likely cause: {top.id} - {top.evidence[0]}."

