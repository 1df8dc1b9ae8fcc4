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
from dcnprobe.harness.trials import TrialRunner
from dcnprobe.settings import Settings, SettingsError, canonical_name, format_value, parse_value


@dataclass
class SweepOutcome:
    base: Settings
    vary: dict[str, list[Any]]
    results: list[TrialResult] = field(default_factory=list)
    invalid: list[dict[str, Any]] = field(default_factory=list)  # combinations that cannot run, and why

    @property
    def slow(self) -> list[TrialResult]:
        return [r for r in self.results if r.failing]

    def summary(self) -> str:
        total = len(self.results) + len(self.invalid)
        text = f"{len(self.slow)} of {len(self.results)} runnable combinations are slow"
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
    runner.reference = base
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
    outcome.results = run_settings_on(executor or LocalExecutor(), runner, runnable)
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
        "trials": [r.report_json() for r in outcome.results],
        "invalid": outcome.invalid,
        "trials_run": runner.ran,
        "trials_cached": runner.reused,
    }
