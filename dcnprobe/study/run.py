"""Running a study: every (preset, seed) a watched, cached, checkpointed trial.

A trial that the harness stops as slow (or that stalls, times out or crashes) is
recorded with its verdict and left out of the statistics, not retried: a slowdown is a
finding, and rerunning it would only crawl again. `retry_failed` (`--retry-failed`)
runs such trials again on a later call, continuing from their last checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dcnprobe.harness.cache import TrialCache
from dcnprobe.harness.executor import Executor, TrialOutcome, run_specs
from dcnprobe.harness.runner import DEFAULT_STALL_AFTER_S, UNDECIDED, TrialResult
from dcnprobe.ratios import DEFAULT_THRESHOLD
from dcnprobe.study.plan import StudyConfig, StudyTrial
from dcnprobe.study.reader import read_seed_run
from dcnprobe.study.summary import SeedRun

DEFAULT_STUDY_BUDGET_S = 6 * 3600.0  # a whole 5-epoch run on a laptop CPU; a slowdown is caught long before
MEASURED = ("ok", *UNDECIDED)  # the speed verdicts of a trial that ran to its end unhindered


@dataclass
class StudyTrialRun:
    trial: StudyTrial
    outcome: TrialOutcome
    metrics: SeedRun

    @property
    def result(self) -> TrialResult:
        return self.outcome.result


@dataclass
class StudyRun:
    config: StudyConfig
    trials: list[StudyTrialRun] = field(default_factory=list)
    executor: str = "local"
    wall_s: float = 0.0

    @property
    def ran(self) -> int:
        return sum(not t.outcome.cached for t in self.trials)

    @property
    def cached(self) -> int:
        return sum(t.outcome.cached for t in self.trials)

    @property
    def epochs_reused(self) -> int:
        """Epochs not trained again: those of cached trials and of checkpoints resumed from."""
        return sum(len(t.metrics.epochs) if t.outcome.cached else (t.outcome.resumed_from or 0) for t in self.trials)

    @property
    def runs(self) -> list[SeedRun]:
        return [t.metrics for t in self.trials]


def run_study(
    config: StudyConfig,
    trials: Sequence[StudyTrial],
    out: Path,
    executor: Executor,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    budget_s: float = DEFAULT_STUDY_BUDGET_S,
    stall_after_s: float = DEFAULT_STALL_AFTER_S,
    retry_failed: bool = False,
    report: Callable[[str], None] = lambda line: None,
    on_progress: Callable[[str], None] | None = None,
) -> StudyRun:
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    study = StudyRun(config, executor=executor.name)
    total = len(trials)

    def done(index: int, outcome: TrialOutcome) -> None:
        trial = trials[index]
        line = f"[{index + 1}/{total}] {trial.label}: {describe_outcome(outcome)}"
        report(line)

    outcomes = run_specs([t.spec for t in trials], TrialCache(out), executor, labels=[t.label for t in trials],
                         threshold=threshold, budget_s=budget_s, stall_after_s=stall_after_s,
                         rerun=lambda cached: retry_failed and cached.status not in MEASURED,
                         on_done=done, on_progress=on_progress)
    for trial, outcome in zip(trials, outcomes):
        metrics = read_seed_run(outcome.result.run_dir, trial.preset, trial.seed, config.epochs)
        study.trials.append(StudyTrialRun(trial, outcome, metrics))
    study.wall_s = time.monotonic() - started
    return study


def describe_outcome(outcome: TrialOutcome) -> str:
    r = outcome.result
    speed = r.status
    if r.ratio is not None and r.ratio_ci:
        speed += f", later epochs {r.ratio:.2f}x epoch 1 ({r.ratio_ci[0]:.2f}-{r.ratio_ci[1]:.2f})"
    if r.cause and r.cause != "none":
        speed += f", {r.cause}"
    if r.stopped:
        speed += f"; {r.stopped}"
    if r.error and r.status in ("crashed", "invalid"):
        speed += f": {r.error}"
    reuse = (" (cached)" if outcome.cached
             else f" (resumed after epoch {outcome.resumed_from})" if outcome.resumed_from else "")
    return f"{speed} in {r.elapsed_s:.0f} s{reuse}"
