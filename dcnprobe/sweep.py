"""A sweep: the full matrix over chosen settings, every combination a trial."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dcnprobe.devices import resolve_device
from dcnprobe.errors import UsageError
from dcnprobe.harness.executor import Executor, LocalExecutor, run_settings_on
from dcnprobe.harness.runner import TrialResult
from dcnprobe.harness.trials import CONFIRM_REPLICATE, TrialRunner
from dcnprobe.settings import Settings, SettingsError, canonical_name, format_value, parse_value


@dataclass
class SweepOutcome:
    base: Settings
    vary: dict[str, list[Any]]
    results: list[TrialResult] = field(default_factory=list)
    invalid: list[dict[str, Any]] = field(default_factory=list)  # combinations that cannot run, and why
    rechecks: list[TrialResult] = field(default_factory=list)  # a fresh run of each combination found slow

    @property
    def slow(self) -> list[TrialResult]:
        """Combinations slow in both their runs (a hang needs no second run to be believed)."""
        return [r for r in self.results if r.failing and (r.status == "stalled" or self._again_failing(r))]

    @property
    def unconfirmed(self) -> list[TrialResult]:
        """Slow once, not when run again: the command's own run-to-run spread, not a setting."""
        return [r for r in self.results if r.failing and r not in self.slow]

    @property
    def trials(self) -> list[TrialResult]:
        return [*self.results, *self.rechecks]

    def _again_failing(self, result: TrialResult) -> bool:
        return any(again.settings == result.settings and again.failing for again in self.rechecks)

    def summary(self) -> str:
        total = len(self.results) + len(self.invalid)
        text = f"{len(self.slow)} of {len(self.results)} runnable combinations are slow"
        if self.unconfirmed:
            text += (f" ({len(self.unconfirmed)} more came out slow once and healthy when run again: not counted; "
                     "this command's epochs vary from run to run)")
        if self.invalid:
            text += f" ({len(self.invalid)} of {total} combinations cannot run)"
        common = _shared_by_all(self.slow, self.vary) if self.slow else {}
        if common and len(self.slow) < len(self.results):
            text += "; every slow one has " + ", ".join(f"{k}={format_value(v)}" for k, v in common.items())
        return text + "."


def parse_vary(texts: Sequence[str]) -> dict[str, list[Any]]:
    """['num_workers=0,2,4'] -> {'num_workers': [0, 2, 4]}."""
    vary: dict[str, list[Any]] = {}
    for text in texts:
        if "=" not in text:
            raise SettingsError(f"--vary expects KEY=V1,V2,..., got {text!r}")
        name, values = text.split("=", 1)
        key = canonical_name(name)
        vary[key] = [parse_value(key, v) for v in values.split(",") if v.strip() != ""]
        if not vary[key]:
            raise SettingsError(f"--vary {text!r} lists no values")
    return vary


def combinations(vary: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(vary)
    return [dict(zip(names, values)) for values in itertools.product(*(vary[n] for n in names))]


def sweep(base: Settings, vary: Mapping[str, list[Any]], runner: TrialRunner, fixed: Sequence[str] = (),
          executor: Executor | None = None) -> SweepOutcome:
    """Every combination of `vary` over `base`; `fixed` names the settings of `base` the user
    chose, which every trial is given too. The trials run on `executor` (default: here, one by one)."""
    command = runner.template.command
    given = list(dict.fromkeys([*vary, *fixed]))
    refused = [name for name in given if not command.takes(name)]
    if refused:
        raise UsageError(f"this command cannot be given {', '.join(refused)}: add "
                         f"{' '.join('{' + n + '}' for n in refused)} to it (settings reach a script from outside "
                         "only for DataLoader arguments, threads and cache clearing)")
    runner.template = replace(runner.template, applied=tuple(given))
    outcome = SweepOutcome(base, dict(vary))
    runner.reference, runner.shown = base, tuple(vary)
    runnable = []
    for changes in combinations(vary):
        try:
            settings = base.with_changes(changes)
            resolve_device(settings.device)
        except UsageError as exc:  # an impossible combination, or a device that is not here
            outcome.invalid.append({"settings": {k: format_value(v) for k, v in changes.items()}, "reason": str(exc)})
            runner.report(f"skip {' '.join(f'{k}={format_value(v)}' for k, v in changes.items())}: {exc}")
            continue
        runnable.append(settings)
    executor = executor or LocalExecutor()
    outcome.results = run_settings_on(executor, runner, runnable)
    # A slow verdict is believed when a fresh run repeats it (CONFIRM_REPLICATE says why).
    slow_given = [r.settings for r in outcome.results if r.failing and r.status != "stalled"]
    slow_once = [s for s in runnable if replace(runner.template, settings=s).given in slow_given]
    if slow_once:
        runner.report(f"confirming: {len(slow_once)} slow combination{'s' if len(slow_once) > 1 else ''} "
                      "run once more")
        outcome.rechecks = run_settings_on(executor, runner, slow_once, replicate=CONFIRM_REPLICATE)
    return outcome


def _shared_by_all(results: Sequence[TrialResult], vary: Mapping[str, list[Any]]) -> dict[str, Any]:
    shared = {}
    for name in vary:
        values = {str(r.settings[name]) for r in results}
        if len(values) == 1:
            shared[name] = results[0].settings[name]
    return shared


def sweep_json(outcome: SweepOutcome, runner: TrialRunner) -> dict[str, Any]:
    return {
        "command": runner.template.command.text(),
        "base": outcome.base.to_dict(),
        "vary": outcome.vary,
        "summary": outcome.summary(),
        "trials": [r.report_json() for r in outcome.trials],
        "unconfirmed": [r.settings for r in outcome.unconfirmed],
        "invalid": outcome.invalid,
        "trials_run": runner.ran,
        "trials_cached": runner.reused,
    }
