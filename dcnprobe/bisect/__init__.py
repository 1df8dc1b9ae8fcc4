"""`dcnprobe bisect`: which settings make later epochs slow."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dcnprobe.bisect.search import DEFAULT_BAD, DEFAULT_GOOD, BisectOutcome, bisect
from dcnprobe.harness.runner import TrialResult
from dcnprobe.harness.trials import TrialRunner

BISECT_FILE = "bisect.json"

__all__ = ["BISECT_FILE", "DEFAULT_BAD", "DEFAULT_GOOD", "BisectOutcome", "bisect", "bisect_json", "trial_json",
           "write_json"]


def trial_json(result: TrialResult) -> dict[str, Any]:
    return {
        "settings": result.settings,
        "faults": result.spec.get("faults", []),
        "status": result.status,
        "epoch_s": result.epoch_s,
        "ratio": result.ratio,
        "ratio_ci": result.ratio_ci,
        "cause": result.cause,
        "verdict": result.verdict,
        "stopped": result.stopped,
        "elapsed_s": result.elapsed_s,
        "replicate": result.spec.get("replicate", 0),
        "key": result.key,
        "run_dir": result.run_dir,
    }


def bisect_json(outcome: BisectOutcome, runner: TrialRunner) -> dict[str, Any]:
    n = len(outcome.differences)
    return {
        "culprit": outcome.culprit,
        "culprits": outcome.culprits,
        "finding": outcome.finding,
        "verdict": outcome.verdict,
        "cause": outcome.cause,
        "evidence": outcome.evidence,
        "advice": outcome.advice,
        "interactions": outcome.interactions,
        "bad": outcome.bad.to_dict(),
        "good": outcome.good.to_dict(),
        "differences": {k: {"bad": v[0], "good": v[1]} for k, v in outcome.differences.items()},
        "threshold": runner.threshold,
        "trials": [trial_json(r) for r in runner.results],
        "trials_run": runner.ran,
        "trials_cached": runner.reused,
        "ddmin_evaluations": outcome.evaluations,
        "full_factorial": 2 ** n,
        "wall_s": outcome.wall_s,
        "template": {k: v for k, v in runner.template.describe().items() if k not in ("settings", "replicate")},
    }


def write_json(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
