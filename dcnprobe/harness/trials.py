"""Running many trials for a bisect or a sweep: cache first, then an isolated run, and
one re-check of a verdict too close to call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from dcnprobe.analysis import DEFAULT_THRESHOLD
from dcnprobe.harness.cache import TrialCache
from dcnprobe.harness.runner import (
    DEFAULT_BUDGET_S,
    DEFAULT_STALL_AFTER_S,
    Progress,
    TrialResult,
    run_trial,
)
from dcnprobe.harness.spec import TrialSpec
from dcnprobe.settings import Settings, format_value


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
    ) -> None:
        self.out, self.template, self.threshold = out, template, threshold
        self.reference = template.settings  # trial labels name the settings that differ from this
        self.budget_s, self.stall_after_s = budget_s, stall_after_s
        self.report, self.on_progress = report, on_progress
        self.cache = TrialCache(out)
        self.results: list[TrialResult] = []  # every trial consulted, in order, re-checks included
        self.ran = 0
        self.reused = 0

    def trial(self, settings: Settings, replicate: int = 0) -> TrialResult:
        spec = replace(self.template, settings=settings, replicate=replicate)
        number = len(self.results) + 1
        label = describe_settings(settings, self.reference)
        cached = self.cache.get(spec)
        if cached is not None:
            self.reused += 1
            self.results.append(cached)
            self.report(f"[{number}] {label}: {summarize(cached)} (cached)")
            return cached

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

    def failing(self, settings: Settings) -> bool | None:
        """True when these settings reproduce the slowdown, False when healthy, None when
        the trial could not tell (crashed, timed out, or could not run here)."""
        result = self.trial(settings)
        if self.noisy(result):
            self.report(f"    verdict too close to call (threshold {self.threshold:g}): running it again")
            again = self.trial(settings, replicate=1)
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


def describe_settings(settings: Settings, reference: Settings | None = None) -> str:
    """'num_workers=4 persistent_workers=true': the settings that differ from the reference."""
    values: Mapping[str, Any] = settings.to_dict()
    if reference is not None:
        differing = settings.differences(reference)
        values = {k: v[0] for k, v in differing.items()}
    return " ".join(f"{k}={format_value(v)}" for k, v in values.items()) or "(the reference settings)"


def summarize(result: TrialResult) -> str:
    ratio = ""
    if result.ratio is not None and result.ratio_ci:
        low, high = result.ratio_ci
        ratio = f" {result.ratio:.2f}x ({low:.2f}-{high:.2f})"
    cause = f", {result.cause}" if result.cause and result.cause != "none" else ""
    how = f"; {result.stopped}" if result.stopped else ""
    error = f": {result.error}" if result.error and result.status in ("crashed", "invalid") else ""
    return f"{result.status}{ratio}{cause} in {result.elapsed_s:.0f} s{how}{error}"
