"""The scenario confusion table: every slowdown scenario run for 2 epochs in its own
process and analysed; its top cause must be the one it declares. Clean runs over three
seeds must never be called slow. This is the ground truth the analysis is judged on.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.faults import FAULTS
from dcnprobe.harness import TrialSpec, run_trial
from dcnprobe.settings import Settings

CLEAN_SEEDS = (1, 2, 3)
STALL_AFTER_S = 10.0


@dataclass
class Row:
    scenario: str
    expected: str
    found: str
    score: float
    status: str
    ratio: float | None

    @property
    def correct(self) -> bool:
        if self.scenario.startswith("clean"):
            return self.status != "slow"
        return self.found == self.expected


def run_scenario(name: str, out: Path, max_batches: int = 100, seed: int = 42) -> Row:
    """One scenario (or 'clean'), 2 epochs, default data, in a fresh process."""
    fault = FAULTS.get(name)
    settings = Settings(device="cpu", seed=seed).with_changes(fault.shows_with if fault else {})
    spec = TrialSpec(settings=settings, faults=(name,) if fault else (), epochs=2, max_batches=max_batches)
    result = run_trial(spec, out, stall_after_s=STALL_AFTER_S)
    top = result.causes[0] if result.causes else {"id": "-", "score": 0.0}
    label = name if fault else f"clean (seed {seed})"
    return Row(label, fault.cause if fault else "none", top["id"], top["score"], result.status, result.ratio)


def table(rows: list[Row]) -> str:
    lines = ["| scenario | declared cause | top cause found | score | status | ratio | correct |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        lines.append(f"| {r.scenario} | {r.expected} | {r.found} | {r.score:.2f} | {r.status} | {ratio} | "
                     f"{'yes' if r.correct else '**no**'} |")
    return "\n".join(lines)


def run(profile: str, max_batches: int = 100) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in FAULTS:
            rows.append(run_scenario(name, Path(tmp) / name, max_batches))
            print(f"  {rows[-1].scenario}: {rows[-1].found} ({rows[-1].status})", flush=True)
        for seed in CLEAN_SEEDS:
            rows.append(run_scenario("clean", Path(tmp) / f"clean-{seed}", max_batches, seed=seed))
            print(f"  {rows[-1].scenario}: {rows[-1].status}", flush=True)
    scenarios = [r for r in rows if not r.scenario.startswith("clean")]
    return {
        "scenario_accuracy": {"value": sum(r.correct for r in scenarios) / len(scenarios), "unit": "fraction",
                              "detail": {"table": table(rows)}},
        "clean_called_slow": {"value": float(sum(not r.correct for r in rows if r.scenario.startswith("clean"))),
                              "unit": "runs", "detail": {"seeds": list(CLEAN_SEEDS)}},
    }
