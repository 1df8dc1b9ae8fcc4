"""`dcnprobe bisect`: which settings make later epochs slow."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dcnprobe.bisect.search import DEFAULT_BAD, DEFAULT_GOOD, BisectOutcome, bisect
from dcnprobe.harness.trials import TrialRunner

BISECT_FILE = "bisect.json"
__all__ = ["BISECT_FILE", "DEFAULT_BAD", "DEFAULT_GOOD", "BisectOutcome", "bisect", "bisect_json", "write_json"]


def bisect_json(outcome: BisectOutcome, runner: TrialRunner) -> dict[str, Any]:
    n = len(outcome.differences)
    return {
        "culprit": outcome.culprit,
        "culprits": outcome.culprits,
        "finding": outcome.finding,
        "disagreements": outcome.disagreements,
        "verdict": outcome.verdict,
        "cause": outcome.cause,
        "evidence": outcome.evidence,
        "advice": outcome.advice,
        "interactions": outcome.interactions,
        "bad": outcome.bad.to_dict(),
        "good": outcome.good.to_dict(),
        "differences": {k: {"bad": v[0], "good": v[1]} for k, v in outcome.differences.items()},
        "threshold": runner.threshold,
        "not_applied": {k: {"bad": v[0], "good": v[1]} for k, v in outcome.not_applied.items()},
        "trials": [r.report_json() for r in runner.results],
        "trials_run": runner.ran,
        "trials_cached": runner.reused,
        "ddmin_evaluations": outcome.evaluations,
        "full_factorial": 2 ** n,
        "wall_s": outcome.wall_s,
        "template": {k: v for k, v in runner.template.describe().items() if k not in ("settings", "replicate")},
        "command": runner.template.command.text(),
    }


def write_json(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
