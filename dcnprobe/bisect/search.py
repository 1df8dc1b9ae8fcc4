"""Bisect: from a slow ("bad") and a healthy ("good") settings object, the smallest set
of setting changes that turns healthy into slow.

1. Confirm: bad must be slow, else say so and stop. Good must be healthy: shown by any
   trial found healthy (adding changes does not make slow settings healthy), or else by
   running good itself; if it is not, say so and name no culprit.
2. ddmin over the settings that differ; an invalid combination is unresolved.
3. Look again in what is left: a second, independent culprit is reported too.
4. Before a culprit is named, it must hold up: the smallest slow configuration and its
   healthy neighbour are run once more (the neighbour with the other changes added, which
   answers step 3 in the same trial when healthy), and the whole table of trials must agree with
   itself (a set of changes that is slow while a larger set containing it is healthy is a
   contradiction). Otherwise the verdict is "inconclusive", with the trials that disagree:
   a confident false culprit is the worst thing a bisect can say.
5. Interactions: a culprit of several settings where no single one is slow alone.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace
from typing import Any

from dcnprobe.analysis.causes import advice_for
from dcnprobe.bisect.ddmin import Outcome, ddmin
from dcnprobe.devices import resolve_device
from dcnprobe.harness.runner import UNSTEADY, TrialResult
from dcnprobe.harness.trials import CONFIRM_REPLICATE, TrialRunner, describe_settings
from dcnprobe.settings import Settings, SettingsError, format_value

# The report's set-up, and the safest one it suggests.
DEFAULT_BAD = Settings(device="auto", num_workers=4, persistent_workers=True, cache_clear="never")
DEFAULT_GOOD = Settings(device="cpu", num_workers=0, persistent_workers=False, cache_clear="epoch")


@dataclass
class BisectOutcome:
    bad: Settings
    good: Settings
    differences: dict[str, tuple[Any, Any]]  # name: (bad value, good value)
    culprits: list[list[str]] = field(default_factory=list)
    # "culprit", "bad-not-slow", "good-is-slow", "inconclusive" (the trials disagree, or the
    # machine stayed busy), "unmeasured" (the bad side could not be run at all), "unresolved"
    finding: str = ""
    verdict: str = ""
    cause: str | None = None
    evidence: list[str] = field(default_factory=list)
    advice: str = ""
    interactions: list[str] = field(default_factory=list)
    evaluations: int = 0  # distinct subsets ddmin asked about (invalid ones cost no trial)
    wall_s: float = 0.0
    # Settings that differ between bad and good but that the command cannot be given (no
    # placeholder, not applicable from outside): left to the script, and said so.
    not_applied: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    disagreements: list[str] = field(default_factory=list)  # why an inconclusive bisect names no culprit

    @property
    def culprit(self) -> list[str]:
        return self.culprits[0] if self.culprits else []


def resolve_auto(settings: Settings) -> Settings:
    """'auto' names a device, so two settings that resolve to the same one do not differ.
    A device that is not there is a UsageError here, before any trial runs."""
    device = resolve_device(settings.device)
    return settings if settings.device != "auto" else settings.with_changes({"device": str(device)})


def bisect(bad: Settings, good: Settings, runner: TrialRunner) -> BisectOutcome:
    started = time.monotonic()
    bad, good = resolve_auto(bad), resolve_auto(good)
    command = runner.template.command
    not_applied = {k: v for k, v in bad.differences(good).items() if not command.takes(k)}
    if not_applied:  # the script decides these itself: both sides run with what it chooses
        bad = bad.with_changes({k: v[1] for k, v in not_applied.items()})
    outcome = BisectOutcome(bad, good, bad.differences(good), not_applied=not_applied)
    for name, (b, g) in not_applied.items():
        runner.report(f"note: {name} differs ({format_value(b)} / {format_value(g)}) but this command cannot be given "
                      f"it; add {{{name}}} to the command to include it. Bisecting the rest.")
    # Each trial ends as soon as its verdict is clear, healthy as well as slow: bisect
    # needs verdicts, not whole runs (issue 24: 7 trials for a 2-setting culprit).
    runner.template = replace(runner.template, applied=tuple(outcome.differences), stop_when_healthy=True)
    _search(outcome, runner)
    outcome.wall_s = time.monotonic() - started
    return outcome


def _search(outcome: BisectOutcome, runner: TrialRunner) -> None:
    bad, good = outcome.bad, outcome.good
    runner.reference = good
    runner.report(f"bad:  {describe_settings(bad, good)}\ngood: {describe_settings(good, bad)}")
    runner.report("confirming that the bad settings are slow")
    bad_failing = runner.failing(bad)
    bad_result = runner.results[-1]
    if bad_failing is not True:
        busy = bad_failing is False and bad_result.busy
        outcome.finding = ("inconclusive" if busy or bad_result.undecided else "bad-not-slow" if bad_failing is False
                           else "unmeasured")
        outcome.verdict = _not_slow_text(bad_result, runner.threshold)
        return
    names = list(outcome.differences)
    if not names:
        outcome.finding = "unresolved"
        outcome.verdict = "The bad and good settings are the same on this machine; nothing to bisect."
        return
    # The good settings are healthy by hypothesis until a trial shows it: any trial found
    # healthy does, since adding changes does not make slow settings healthy (the
    # contradiction check holds the trials to that). They are run themselves only when no
    # trial has (or as a confirmation), which spares a trial in the common case.
    trials: dict[frozenset, list[TrialResult]] = {frozenset(names): [bad_result]}
    measured: dict[frozenset, list[Outcome]] = {frozenset(names): [Outcome.FAIL]}  # each trial's answer

    def test(subset: frozenset, replicate: int = 0) -> Outcome:
        changes = {name: outcome.differences[name][0] for name in subset}
        try:
            settings = good.with_changes(changes)
        except SettingsError as exc:
            runner.report(f"    skip {_changes_text(changes)}: {exc}")
            return Outcome.UNRESOLVED
        failing = runner.failing(settings, replicate=replicate)
        trials.setdefault(frozenset(subset), []).append(runner.results[-1])
        answer = {True: Outcome.FAIL, False: Outcome.PASS, None: Outcome.UNRESOLVED}[failing]
        measured.setdefault(frozenset(subset), []).append(answer)
        return answer

    history: dict[frozenset, Outcome] = {frozenset(): Outcome.PASS, frozenset(names): Outcome.FAIL}
    remaining = names
    disagreements: list[str] | None = None
    while remaining:
        result = ddmin(remaining, test, known=history)
        history.update(result.history)
        outcome.evaluations += result.evaluations
        outcome.culprits.append(sorted(result.minimal, key=names.index))
        # Another, independent culprit among the rest? Ask about the largest runnable part
        # of it (persistent_workers alone, say, cannot run and would answer nothing).
        remaining = _largest_runnable([n for n in remaining if n not in result.minimal], good, outcome)
        if disagreements is None:  # the first culprit is confirmed before any other is looked for
            disagreements, rest_healthy = _confirm(outcome.culprit, remaining, history, test, runner)
            if rest_healthy:
                break
        if not remaining or _ask(remaining, test, history, outcome) is not Outcome.FAIL:
            break
    if not _good_is_healthy(outcome, runner, trials, measured, test, bad_result):
        return
    disagreements = (disagreements or []) + _contradictions(history, trials)
    # The cause is read off the slowest failing trial that names one (a trial stopped early
    # may have too few batches for any rule to speak).
    explained = [r for r in runner.results if r.failing and r.causes and r.causes[0]["id"] != "none"]
    slowest = max(explained, key=lambda r: r.ratio or 0.0, default=bad_result)
    if disagreements:
        outcome.finding = "inconclusive"
        outcome.culprits = []
        outcome.disagreements = disagreements
        outcome.verdict = ("Inconclusive: the trials disagree, so no culprit is named. " + " ".join(disagreements)
                           + " Rerun on a quiet machine, or with more batches (--max-batches).")
        return
    outcome.finding = "culprit"
    outcome.interactions = [_interaction_text(c, history) for c in outcome.culprits if len(c) > 1]
    _explain(outcome, slowest)
    outcome.verdict = _culprit_text(outcome, bad_result)




def _good_is_healthy(outcome: BisectOutcome, runner: TrialRunner, trials: dict[frozenset, list[TrialResult]],
                     measured: dict[frozenset, list[Outcome]], test, bad_result: TrialResult) -> bool:
    """Whether the trials show the good settings healthy, running them if none has; if
    not, the outcome says why and the bisect names no culprit."""
    good = frozenset()
    if good not in measured:
        if any(Outcome.PASS in answers for answers in measured.values()):
            return True
        runner.report("no trial was healthy: running the good settings")
        test(good)
    if all(answer is Outcome.PASS for answer in measured[good]):
        return True
    good_result = trials[good][-1]
    outcome.culprits = []
    if Outcome.FAIL in measured[good]:
        outcome.finding = "good-is-slow"
        outcome.verdict = ("The good settings are slow too, so the slowdown does not come from the settings that "
                           "differ: " + (good_result.verdict or good_result.status))
    else:
        outcome.finding = "inconclusive"
        if good_result.contended:
            outcome.verdict = (f"Inconclusive: the machine was busy while the good settings ran "
                               f"({good_result.load_text()}); rerun on a quiet machine.")
        elif good_result.status == UNSTEADY:
            outcome.verdict = f"Inconclusive: with the good settings {_unsteady_text(good_result)}"
        else:
            outcome.verdict = f"The good settings could not be measured ({good_result.status}): {good_result.error or ''}"
    _explain(outcome, bad_result)
    return False


def _confirm(culprit: list[str], rest: list[str], history: dict[frozenset, Outcome], test,
             runner: TrialRunner) -> tuple[list[str], bool]:
    """Run the smallest slow configuration again, and its healthy neighbour with the rest of
    the changes added; what did not hold up, in words (empty when both did), and whether
    the rest is healthy.

    The neighbour with the rest is one trial for two questions. Adding changes does not
    make a slow configuration healthy (the contradiction check holds the trials to that),
    so if it is healthy, so is the neighbour (confirmed by another process than the one
    that first said so) and so is the rest alone: no second culprit there, and no trial
    spent asking. If it is not healthy, the neighbour is run again alone, and the rest is
    asked about as before."""
    smallest = frozenset(culprit)
    healthy = [s for s, o in history.items() if s < smallest and o is Outcome.PASS]
    neighbour = max(healthy, key=len, default=frozenset())
    runner.report("confirming the culprit: running the smallest slow configuration and its healthy neighbour again")
    problems = []
    again = test(smallest, replicate=CONFIRM_REPLICATE)
    if again is not Outcome.FAIL:
        problems.append(f"Run again, {_subset_text(smallest)} was {_outcome_word(again)}, not slow.")
    wider = neighbour | frozenset(rest)
    if rest and wider not in history:
        history[wider] = test(wider)
        if history[wider] is Outcome.PASS:
            return problems, True
    again = test(neighbour, replicate=CONFIRM_REPLICATE)
    if again is not Outcome.PASS:
        problems.append(f"Run again, {_subset_text(neighbour)} was {_outcome_word(again)}, not healthy.")
    return problems, False


def _contradictions(history: dict[frozenset, Outcome], trials: dict[frozenset, list[TrialResult]]) -> list[str]:
    """A slow set of changes inside a healthy larger set: both cannot be true of settings
    that only add to one another, so the measurements, not the settings, are in doubt."""
    found = []
    for small, small_outcome in history.items():
        for large, large_outcome in history.items():
            if small < large and small_outcome is Outcome.FAIL and large_outcome is Outcome.PASS:
                found.append(f"{_subset_text(small)} was slow{_ratios(trials.get(small))} while "
                             f"{_subset_text(large)}, which includes it, was healthy{_ratios(trials.get(large))}.")
    return found


def _subset_text(subset: frozenset) -> str:
    return "the good settings" if not subset else "changing " + " + ".join(sorted(subset))


def _outcome_word(outcome: Outcome) -> str:
    return {Outcome.FAIL: "slow", Outcome.PASS: "healthy", Outcome.UNRESOLVED: "unresolved"}[outcome]


def _ratios(results: list[TrialResult] | None) -> str:
    shown = [f"{r.ratio:.2f}x" for r in results or [] if r.ratio is not None]
    return f" ({', '.join(shown)})" if shown else ""


def _largest_runnable(names: list[str], good: Settings, outcome: BisectOutcome) -> list[str]:
    for size in range(len(names), 0, -1):
        for subset in itertools.combinations(names, size):
            try:
                good.with_changes({n: outcome.differences[n][0] for n in subset})
            except SettingsError:
                continue
            return list(subset)
    return []


def _ask(subset: list[str], test, history: dict[frozenset, Outcome], outcome: BisectOutcome) -> Outcome:
    key = frozenset(subset)
    if key not in history:
        history[key] = test(key)
        outcome.evaluations += 1
    return history[key]


def _explain(outcome: BisectOutcome, trial: TrialResult) -> None:
    if trial.causes and trial.causes[0]["id"] != "none":  # "no cause stands out" has no advice to give
        top = trial.causes[0]
        outcome.cause, outcome.evidence = top["id"], list(top["evidence"])
        outcome.advice = advice_for(top["id"])


def _changes_text(changes: dict[str, Any]) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in changes.items())


def _interaction_text(culprit: list[str], history: dict[frozenset, Outcome]) -> str:
    alone = []
    for name in culprit:
        result = history.get(frozenset([name]))
        alone.append(f"{name} alone: {'invalid or unresolved' if result is Outcome.UNRESOLVED else 'healthy' if result is Outcome.PASS else 'slow' if result is Outcome.FAIL else 'not tested'}")
    return f"{' + '.join(culprit)} matter only together ({'; '.join(alone)})"


def _culprit_text(outcome: BisectOutcome, bad_result: TrialResult) -> str:
    culprit = outcome.culprit
    moves = ", ".join(f"{n}={format_value(outcome.differences[n][0])}" for n in culprit)
    fixes = ", ".join(f"{n}={format_value(outcome.differences[n][1])}" for n in culprit)
    together = " together make" if len(culprit) > 1 else " makes"
    if bad_result.status == "stalled":
        effect = "a later epoch stall (no batch finishes)"
    else:
        effect = "later epochs slow" + (f" ({bad_result.ratio:.2f}x epoch 1)" if bad_result.ratio else "")
    text = f"Culprit: {moves}{together} {effect}; with {fixes} the run is healthy."
    if len(outcome.culprits) > 1:
        text += " Also, independently: " + "; ".join(" + ".join(c) for c in outcome.culprits[1:]) + "."
    if outcome.cause and outcome.cause != "none":
        text += f" Likely cause: {outcome.cause} ({outcome.evidence[0]})."
    if outcome.advice:
        text += f" What to do: {outcome.advice}."
    return text


def _unsteady_text(result: TrialResult) -> str:
    low, high = result.ratio_ci  # an unsteady trial has one: it is what made it unsteady
    return (f"epoch 1 ran clearly slower than epoch 2 (epoch 2 at {result.ratio:.2f}x epoch 1, 95% CI {low:.2f}-{high:.2f}), "
            f"so epoch 1 is no baseline and a slowdown after it could hide ({result.load_text() or 'no outside load measured'}). "
            "Rerun with more batches per epoch (--max-batches), or on a quiet machine.")


def _not_slow_text(result: TrialResult, threshold: float) -> str:
    if result.status == UNSTEADY:
        return f"Inconclusive: with the bad settings {_unsteady_text(result)}"
    if result.contended:
        return (f"Inconclusive: the machine was busy with other work while the bad settings ran "
                f"({result.load_text()}), so their timing says nothing. Rerun on a quiet machine.")
    if result.status in ("crashed", "invalid", "timeout"):
        return f"The bad settings could not be measured ({result.status}): {result.error or result.stopped or ''}".strip()
    if result.ratio is None:
        return "The bad settings ran only one epoch; nothing to compare."
    low, high = result.ratio_ci
    measured = f"later epochs run {result.ratio:.2f}x epoch 1 (95% CI {low:.2f}-{high:.2f}, threshold {threshold:g})"
    if result.busy:
        return (f"Inconclusive: with the bad settings {measured}, but other programs kept the machine busy "
                f"({result.load_text()}), which can hide a slowdown that builds up. Rerun on a quiet machine.")
    return f"No slowdown: with the bad settings, {measured}. Nothing to bisect on this machine."
