"""Running many trials for a bisect or a sweep: cache first, then an isolated run, one
re-check of a verdict too close to call, and reruns of a trial that another process on
the machine disturbed.

A contended trial (outside CPU load changed between its epochs) is run again once the
machine has calmed down, up to `contention_tries` times; it is never cached as a verdict,
and if every try is contended it stays `contended`: inconclusive, never a culprit. So is
an unsteady one (epoch 1 ran clearly slower than the epoch compared: no baseline).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dcnprobe import machine_load
from dcnprobe.harness.cache import TrialCache
from dcnprobe.harness.runner import (
    DEFAULT_BUDGET_S,
    DEFAULT_STALL_AFTER_S,
    UNSTEADY,
    Progress,
    TrialResult,
    run_trial,
)
from dcnprobe.harness.spec import TrialSpec
from dcnprobe.ratios import DEFAULT_THRESHOLD
from dcnprobe.settings import Settings, format_value

# A fresh run of settings already measured, to confirm a verdict (replicate 1 is the
# close-call re-check): a loop's epochs can differ by 20-40% from one run to the next on a
# small machine (how workers and threads get scheduled), which the interval over one run's
# batches cannot see. Bisect confirms its culprit with one; sweep each slow combination.
CONFIRM_REPLICATE = 2
CONTENTION_TRIES = 3  # one run and two reruns: a busy spell on a shared machine rarely lasts longer
CALM_LOAD = 0.15  # outside load (share of all cores) under which the machine counts as calm
CALM_WINDOW_S = 3.0
CALM_WAIT_S = 60.0


class TrialRunner:
    def __init__(
        self,
        out: Path,
        template: TrialSpec,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        budget_s: float = DEFAULT_BUDGET_S,
        stall_after_s: float = DEFAULT_STALL_AFTER_S,
        report: Callable[[str], None] = lambda line: None,
        on_progress: Callable[[str], None] | None = None,
        fresh: bool = False,
        contention_tries: int = CONTENTION_TRIES,
        wait_for_calm: Callable[[], float | None] | None = None,
    ) -> None:
        self.out, self.template, self.threshold = out, template, threshold
        self.reference = template.settings  # trial labels name the settings that differ from this
        self.shown: tuple[str, ...] = ()  # ... and these always (a sweep's varied settings)
        self.budget_s, self.stall_after_s = budget_s, stall_after_s
        self.report, self.on_progress = report, on_progress
        self.cache = TrialCache(out)
        self.fresh = fresh  # run every trial again, whatever the cache holds
        self.contention_tries = contention_tries
        self.wait_for_calm = wait_for_calm or calm_machine
        self.results: list[TrialResult] = []  # every trial consulted, in order, re-checks included
        self.ran = 0
        self.reused = 0

    def trial(self, settings: Settings, replicate: int = 0) -> TrialResult:
        """One measured trial: from the cache, or run (again, while contended)."""
        spec = replace(self.template, settings=settings, replicate=replicate)
        cached = None if self.fresh else self.cache.get(spec)
        if cached is not None and not cached.undecided:
            self.reused += 1
            self.results.append(cached)
            self.report(f"[{len(self.results)}] {describe_settings(settings, self.reference, self.shown)}: {summarize(cached)} "
                        f"(cached from {cached.finished_at or 'an earlier run'})")
            return cached
        result = self._run(spec)
        for attempt in range(2, self.contention_tries + 1):
            if not result.undecided:
                break
            load = self.wait_for_calm()
            if result.contended and result.stopped_healthy:  # the early stop was the doubt: none this time
                spec = replace(spec, stop_when_healthy=False)
                self.report(f"    stopped early as healthy on a busy machine ({result.load_text()}): running it again "
                            f"to its end (try {attempt} of {self.contention_tries})")
            elif result.status == UNSTEADY:
                self.report(f"    epoch 1 ran clearly slower than epoch 2 ({result.ratio:.2f}x): it is no baseline; "
                            f"running it again (try {attempt} of {self.contention_tries})")
            elif load is not None:
                self.report(f"    the machine was busy ({result.load_text()}): running it again once it is quieter "
                            f"(now {load:.0%} outside load; try {attempt} of {self.contention_tries})")
            else:
                self.report(f"    the machine was busy: running it again (try {attempt})")
            result = self._run(spec)
        return result

    def _run(self, spec: TrialSpec) -> TrialResult:
        number = len(self.results) + 1
        label = describe_settings(spec.settings, self.reference, self.shown)

        def progress(p: Progress) -> None:
            if self.on_progress:
                of = f"/{p.batches_per_epoch}" if p.batches_per_epoch else ""
                ratio = f", ratio so far {p.ratio:.2f}" if p.ratio else ""
                where = f"epoch {p.epoch}, batch {p.batch}{of}" if p.epoch else "starting (data, workers)"
                self.on_progress(f"[{number}] {label}: {where}, {p.elapsed_s:.0f} s{ratio}")

        result = run_trial(spec, self.cache.prepare(spec), threshold=self.threshold, budget_s=self.budget_s,
                           stall_after_s=self.stall_after_s, on_progress=progress)
        self.cache.put(result)
        self.ran += 1
        self.results.append(result)
        self.report(f"[{number}] {label}: {summarize(result)}")
        return result

    def failing(self, settings: Settings, replicate: int = 0) -> bool | None:
        """True when these settings reproduce the slowdown, False when healthy, None when
        the trial could not tell (crashed, timed out, could not run here, or the machine
        stayed busy)."""
        result = self.trial(settings, replicate)
        if self.noisy(result):
            self.report(f"    verdict too close to call (threshold {self.threshold:g}): running it again")
            again = self.trial(settings, replicate=replicate + 1)
            if not self.noisy(again):
                result = again
            else:  # two close calls: their average ratio decides
                return (result.ratio + again.ratio) / 2 > self.threshold
        if result.failing:
            return True
        return False if result.status == "ok" else None

    def noisy(self, result: TrialResult) -> bool:
        if result.status not in ("ok", "slow") or result.stopped or not result.ratio_ci:
            return False
        low, high = result.ratio_ci
        return low <= self.threshold <= high


def calm_machine(window_s: float = CALM_WINDOW_S, patience_s: float = CALM_WAIT_S) -> float | None:
    """Wait (at most `patience_s`) until other processes use less than CALM_LOAD of the
    machine over a `window_s` window; the last load seen, or None where it cannot be read."""
    deadline = time.monotonic() + patience_s
    load = None
    while True:
        start = machine_load.mark()
        time.sleep(window_s)
        load = machine_load.other_load(start, machine_load.mark())
        if load is None or load < CALM_LOAD or time.monotonic() >= deadline:
            return load


def describe_settings(settings: Settings, reference: Settings | None = None, shown: Sequence[str] = ()) -> str:
    """'num_workers=4 persistent_workers=true': the settings that differ from the reference,
    and those in `shown` (a sweep's varied settings) even where they equal it."""
    values: Mapping[str, Any] = settings.to_dict()
    if reference is not None:
        differing = settings.differences(reference)
        values = {k: v for k, v in values.items() if k in differing or k in shown}
    return " ".join(f"{k}={format_value(v)}" for k, v in values.items()) or "(the reference settings)"


def summarize(result: TrialResult) -> str:
    ratio = ""
    if result.ratio is not None and result.ratio_ci:
        low, high = result.ratio_ci
        ratio = f" {result.ratio:.2f}x ({low:.2f}-{high:.2f})"
    cause = f", {result.cause}" if result.cause and result.cause != "none" else ""
    how = f"; {result.stopped}" if result.stopped else ""
    error = f": {result.error}" if result.error and result.status in ("crashed", "invalid") else ""
    load = f" ({result.load_text()})" if result.contended else ""
    return f"{result.status}{ratio}{cause} in {result.elapsed_s:.0f} s{how}{error}{load}"
