"""Where trials run: here, one at a time (the default), or as tasks on a Ray cluster.

An executor runs `TrialJob`s (a spec, its directory and the harness's limits) through
`run_trial`, the same isolated, watched, early-stopped run either way, and hands each
`TrialResult` back as it finishes. Caching and resuming stay with the caller
(`run_specs`): the driver looks in the cache, prepares each trial's directory, and writes
result.json when the result comes back, so a study or sweep that ran on Ray resumes
locally and the other way round. On Ray each trial is a task that writes its records
straight into the output directory: on a cluster of several machines that directory
must be on storage every node sees.

Timing honesty: trials whose times are compared (sweep, bisect) must not share CPUs, so
they ask for a whole node (as many CPUs as the largest node has); a study compares
metrics only and packs trials by `TrialResources.cpus`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dcnprobe.errors import UsageError
from dcnprobe.harness.cache import TrialCache
from dcnprobe.harness.resume import last_checkpoint_epoch
from dcnprobe.harness.runner import (
    DEFAULT_BUDGET_S,
    DEFAULT_STALL_AFTER_S,
    Progress,
    TrialResult,
    run_trial,
)
from dcnprobe.harness.spec import TrialSpec
from dcnprobe.harness.trials import describe_settings, summarize
from dcnprobe.ratios import DEFAULT_THRESHOLD

LOCAL_RAY = "local"  # `--ray` without an address: start a private Ray cluster on this machine
RAY_INSTALL_HINT = "pip install -c constraints.txt -e '.[ray]'"
WAIT_S = 2.0  # how often the Ray driver looks for finished trials (and reports who is running)


@dataclass(frozen=True)
class TrialJob:
    spec: TrialSpec
    out: Path  # the trial's directory, absolute: a Ray worker does not run where the driver does
    threshold: float = DEFAULT_THRESHOLD
    budget_s: float = DEFAULT_BUDGET_S
    stall_after_s: float = DEFAULT_STALL_AFTER_S
    label: str = ""


@dataclass(frozen=True)
class TrialResources:
    """What one trial asks of a Ray cluster."""

    cpus: float = 1.0
    gpus: float = 0.0
    whole_node: bool = False  # timed trials: as many CPUs as the largest node, so one per node


Done = Callable[[TrialJob, TrialResult], None]
Running = Callable[[str], None]  # a progress line


class LocalExecutor:
    """One trial at a time in this process's machine: what every command did before Ray."""

    name = "local"

    def run(self, jobs: Sequence[TrialJob], on_done: Done, on_progress: Running | None = None) -> list[TrialResult]:
        results = []
        for job in jobs:
            result = _run_job(job, _progress_line(job, on_progress))
            on_done(job, result)
            results.append(result)
        return results

    def close(self) -> None:
        pass


class RayExecutor:
    """Every trial a Ray task; results come back in the order they finish."""

    def __init__(self, address: str = LOCAL_RAY, resources: TrialResources = TrialResources()) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError(f"--ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from None
        self.ray = ray
        self.owned = not ray.is_initialized()  # a cluster the caller connected to stays theirs
        if self.owned:
            _quiet_init(ray, address)
        self.address = address
        self.options = self._task_options(resources)
        self.name = f"ray ({address}, {self._describe_options()} per trial)"

    def _task_options(self, resources: TrialResources) -> dict[str, Any]:
        cpus = resources.cpus
        if resources.whole_node:
            sizes = [n["Resources"].get("CPU", 0) for n in self.ray.nodes() if n.get("Alive")]
            cpus = max(sizes, default=resources.cpus) or resources.cpus
        available = self.ray.cluster_resources()
        if cpus > available.get("CPU", 0) or resources.gpus > available.get("GPU", 0):
            raise UsageError(f"a trial asks for {cpus:g} CPUs and {resources.gpus:g} GPUs; the Ray cluster has "
                             f"{available.get('CPU', 0):g} and {available.get('GPU', 0):g}")
        # max_retries=0: a trial that dies is a result (crashed), not something to run twice.
        return {"num_cpus": cpus, "num_gpus": resources.gpus, "max_retries": 0}

    def _describe_options(self) -> str:
        gpus = f", {self.options['num_gpus']:g} GPU" if self.options["num_gpus"] else ""
        return f"{self.options['num_cpus']:g} CPU{gpus}"

    def run(self, jobs: Sequence[TrialJob], on_done: Done, on_progress: Running | None = None) -> list[TrialResult]:
        ray = self.ray
        task = ray.remote(_run_job).options(**self.options)
        pending = {task.remote(job): index for index, job in enumerate(jobs)}
        results: list[TrialResult | None] = [None] * len(jobs)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
                for ref in ready:
                    index = pending.pop(ref)
                    results[index] = ray.get(ref)
                    on_done(jobs[index], results[index])
                if on_progress and pending:
                    running = ", ".join(jobs[i].label for i in sorted(pending.values())[:4])
                    more = f" and {len(pending) - 4} more" if len(pending) > 4 else ""
                    on_progress(f"{len(jobs) - len(pending)} of {len(jobs)} trials done; waiting for {running}{more}")
        except BaseException:
            for ref in pending:  # the task's trial process dies with its worker
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
        return [r for r in results if r is not None]

    def close(self) -> None:
        if self.owned:
            self.ray.shutdown()


Executor = LocalExecutor | RayExecutor


def make_executor(ray_address: str | None, resources: TrialResources = TrialResources()) -> Executor:
    """`--ray [ADDRESS]` given or not."""
    return LocalExecutor() if ray_address is None else RayExecutor(ray_address, resources)


def _run_job(job: TrialJob, on_progress: Callable[[Progress], None] | None = None) -> TrialResult:
    return run_trial(job.spec, job.out, threshold=job.threshold, budget_s=job.budget_s,
                     stall_after_s=job.stall_after_s, on_progress=on_progress)


def _progress_line(job: TrialJob, show: Running | None) -> Callable[[Progress], None] | None:
    if show is None:
        return None

    def progress(p: Progress) -> None:
        of = f"/{p.batches_per_epoch}" if p.batches_per_epoch else ""
        where = f"epoch {p.epoch}, batch {p.batch}{of}" if p.epoch else "starting (data, workers)"
        show(f"{job.label}: {where}, {p.elapsed_s:.0f} s")

    return progress


def _quiet_init(ray, address: str) -> None:
    """Start or join a cluster without Ray's start-up chatter drowning the progress lines."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage-stats notice
    # Trials inherit what dcnprobe was given (a private data cache, for instance).
    env = {k: v for k, v in os.environ.items() if k.startswith("DCNPROBE_")}
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, runtime_env={"env_vars": env} if env else None)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsageError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    for name in ("ray", "ray.data", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)


@dataclass
class TrialOutcome:
    """One trial of a multi-trial command: its result, and what was reused."""

    result: TrialResult
    cached: bool = False  # a finished result from an earlier run
    resumed_from: int | None = None  # epochs taken from a checkpoint of an interrupted run


def run_specs(
    specs: Sequence[TrialSpec],
    cache: TrialCache,
    executor: Executor,
    *,
    labels: Sequence[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    budget_s: float = DEFAULT_BUDGET_S,
    stall_after_s: float = DEFAULT_STALL_AFTER_S,
    rerun: Callable[[TrialResult], bool] = lambda cached: False,
    on_done: Callable[[int, TrialOutcome], None] = lambda index, outcome: None,
    on_progress: Running | None = None,
) -> list[TrialOutcome]:
    """Each spec from the cache, or run on the executor; results are cached as they come.

    `rerun(cached)` says which cached results to run again. A spec with checkpoints
    continues from its directory's last one (TrialCache.prepare keeps them)."""
    labels = list(labels) if labels is not None else [f"trial {i + 1}" for i in range(len(specs))]
    outcomes: list[TrialOutcome | None] = [None] * len(specs)
    jobs, where = [], {}
    for index, spec in enumerate(specs):
        cached = cache.get(spec)
        if cached is not None and not rerun(cached):
            outcomes[index] = TrialOutcome(cached, cached=True)
            on_done(index, outcomes[index])
            continue
        directory = cache.prepare(spec, keep=spec.checkpoints).resolve()
        job = TrialJob(spec, directory, threshold, budget_s, stall_after_s, labels[index])
        where[id(job)] = (index, last_checkpoint_epoch(directory))
        jobs.append(job)

    def done(job: TrialJob, result: TrialResult) -> None:
        # Cached under the key the driver prepared: a Ray worker computes the code version
        # afresh, and files edited since the driver started would send it elsewhere.
        result.key = job.out.name
        cache.put(result)
        index, resumed_from = where[id(job)]
        outcomes[index] = TrialOutcome(result, resumed_from=resumed_from)
        on_done(index, outcomes[index])

    executor.run(jobs, done, on_progress)
    return [o for o in outcomes if o is not None]


def run_settings_on(executor: Executor, runner, settings_list: Sequence, replicate: int = 0) -> list[TrialResult]:
    """The trials of a TrialRunner (a sweep's), one per settings object. Locally the
    runner runs them itself, one by one, with its re-runs of contended trials; elsewhere
    they all go out at once (timed trials ask for a whole node each) and a trial that
    another process disturbed is reported as such."""
    if isinstance(executor, LocalExecutor):
        return [runner.trial(settings, replicate) for settings in settings_list]

    specs = [replace(runner.template, settings=s, replicate=replicate) for s in settings_list]
    labels = [describe_settings(s, runner.reference, getattr(runner, "shown", ())) for s in settings_list]
    fresh = getattr(runner, "fresh", False)

    def done(index: int, outcome: TrialOutcome) -> None:
        runner.results.append(outcome.result)
        if outcome.cached:
            runner.reused += 1
        else:
            runner.ran += 1
        runner.report(f"[{len(runner.results)}] {labels[index]}: {summarize(outcome.result)}"
                      + (" (cached)" if outcome.cached else ""))

    outcomes = run_specs(specs, runner.cache, executor, labels=labels, threshold=runner.threshold,
                         budget_s=runner.budget_s, stall_after_s=runner.stall_after_s,
                         rerun=lambda cached: fresh or cached.undecided, on_done=done,
                         on_progress=runner.on_progress)
    return [o.result for o in outcomes]
