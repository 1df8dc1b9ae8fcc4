"""Bisect's orchestration on a table-driven stand-in for trials (the real trials run in
the slow tests): confirmation, invalid combinations, a second culprit, interactions."""

from dcnprobe.bisect import DEFAULT_BAD, DEFAULT_GOOD, bisect_json
from dcnprobe.bisect.search import bisect
from dcnprobe.harness.runner import TrialResult
from dcnprobe.harness.spec import TrialSpec
from dcnprobe.settings import Settings

from conftest import builtin_spec


class TableRunner:
    """Answers like TrialRunner, from a rule over the settings instead of a training run."""

    def __init__(self, slow_when, slow_status="slow"):
        self.slow_when, self.slow_status = slow_when, slow_status
        self.threshold = 1.2
        self.template = builtin_spec()
        self.reference = Settings()
        self.results: list[TrialResult] = []
        self.ran = self.reused = 0
        self.lines: list[str] = []
        self.replicates: list[int] = []

    def report(self, line):
        self.lines.append(line)

    def failing(self, settings, replicate=0):
        slow = self.slow_when(settings)
        self.ran += 1
        self.replicates.append(replicate)
        self.results.append(TrialResult(key=str(self.ran), spec=TrialSpec(self.template.command, settings).describe(),
                                        status=self.slow_status if slow else "ok", ratio=1.6 if slow else 1.0,
                                        ratio_ci=[1.5, 1.7] if slow else [0.95, 1.05],
                                        causes=[{"id": "worker-memory-growth", "score": 0.9, "evidence": ["e"]}]
                                        if slow else [{"id": "none", "score": 1.0, "evidence": ["-"]}]))
        return slow


BAD = DEFAULT_BAD.with_changes({"device": "cpu"})


def test_persistent_workers_interaction():
    runner = TableRunner(lambda s: s.num_workers > 0 and s.persistent_workers)
    outcome = bisect(BAD, DEFAULT_GOOD, runner)
    assert outcome.finding == "culprit"
    assert outcome.culprit == ["num_workers", "persistent_workers"]
    assert outcome.interactions == ["num_workers + persistent_workers matter only together "
                                    "(num_workers alone: healthy; persistent_workers alone: invalid or unresolved)"]
    assert outcome.cause == "worker-memory-growth"
    assert outcome.verdict.startswith("Culprit: num_workers=4, persistent_workers=true together make later epochs "
                                      "slow (1.60x epoch 1); with num_workers=0, persistent_workers=false the run is healthy.")
    # bad, {num_workers, persistent_workers}, {num_workers} (healthy: so are the good settings,
    # which need no trial of their own), then the confirmation: the culprit once more, and its
    # healthy neighbour with the leftover change added, {num_workers, cache_clear}, whose
    # health also answers "is cache_clear a culprit too?"
    assert runner.ran == 5
    assert runner.replicates[-2:] == [2, 0]
    assert runner.results[-1].spec["settings"]["cache_clear"] == "never" and runner.results[-1].spec["settings"][
        "num_workers"] == 4 and not runner.results[-1].spec["settings"]["persistent_workers"]
    assert "persistent_workers=true needs num_workers > 0" in "\n".join(runner.lines)


def test_single_setting_and_no_interaction():
    runner = TableRunner(lambda s: s.cache_clear == "never")
    outcome = bisect(BAD, DEFAULT_GOOD, runner)
    assert outcome.culprit == ["cache_clear"] and outcome.interactions == []
    assert outcome.verdict.startswith("Culprit: cache_clear=never makes later epochs slow (1.60x epoch 1);")


def test_a_stall_is_called_a_stall_not_a_ratio():
    runner = TableRunner(lambda s: s.num_workers > 0, slow_status="stalled")
    outcome = bisect(BAD, DEFAULT_GOOD, runner)
    assert outcome.culprit == ["num_workers"]
    assert outcome.verdict.startswith("Culprit: num_workers=4 makes a later epoch stall (no batch finishes); "
                                      "with num_workers=0 the run is healthy.")


def test_two_independent_culprits_are_both_reported():
    runner = TableRunner(lambda s: s.num_workers > 0 or s.cache_clear == "never")
    outcome = bisect(BAD, DEFAULT_GOOD, runner)
    assert sorted(map(tuple, outcome.culprits)) == [("cache_clear",), ("num_workers",)]
    assert "Also, independently" in outcome.verdict


def test_bad_not_slow_stops_after_one_trial():
    runner = TableRunner(lambda s: False)
    outcome = bisect(BAD, DEFAULT_GOOD, runner)
    assert outcome.finding == "bad-not-slow" and outcome.culprit == [] and runner.ran == 1
    assert outcome.verdict.startswith("No slowdown")


def test_a_bad_side_whose_epoch_1_was_no_baseline_is_inconclusive_not_healthy():
    """Measured under load: epoch 2 at 0.32x epoch 1 (95% CI 0.15-0.53). 'No slowdown'
    would have been a confident wrong answer: the planted slowdown hid behind epoch 1."""

    class Unsteady(TableRunner):
        def failing(self, settings, replicate=0):
            self.ran += 1
            self.results.append(TrialResult(key="1", spec=TrialSpec(self.template.command, settings).describe(),
                                            status="unsteady", ratio=0.32, ratio_ci=[0.15, 0.53],
                                            outside_load={"1": 0.48, "2": 0.46}))
            return None

    runner = Unsteady(lambda s: False)
    outcome = bisect(BAD, DEFAULT_GOOD, runner)
    assert outcome.finding == "inconclusive" and outcome.culprit == [] and runner.ran == 1
    assert outcome.verdict.startswith("Inconclusive: with the bad settings epoch 1 ran clearly slower than epoch 2 "
                                      "(epoch 2 at 0.32x epoch 1, 95% CI 0.15-0.53), so epoch 1 is no baseline")
    assert "outside CPU load epoch 1 48%, epoch 2 46%" in outcome.verdict


def test_a_bad_side_healthy_on_a_busy_machine_is_inconclusive_not_no_slowdown():
    """Measured: a one-core busy loop hid the planted loader slowdown for a whole trial."""
    runner = TableRunner(lambda s: False)
    failing = runner.failing

    def busy(settings, replicate=0):
        answer = failing(settings, replicate)
        runner.results[-1].outside_load = {"1": 0.5, "2": 0.48}
        return answer

    runner.failing = busy
    outcome = bisect(BAD, DEFAULT_GOOD, runner)
    assert outcome.finding == "inconclusive" and outcome.culprit == [] and runner.ran == 1
    assert outcome.verdict.startswith("Inconclusive: with the bad settings later epochs run 1.00x epoch 1")
    assert "outside CPU load epoch 1 50%, epoch 2 48%" in outcome.verdict and "quiet machine" in outcome.verdict


def test_good_slow_too_is_said_and_no_culprit_named():
    """Every trial slow: no trial shows the good settings healthy, so they are run, and
    found slow."""
    runner = TableRunner(lambda s: True)
    outcome = bisect(BAD, DEFAULT_GOOD, runner)
    assert outcome.finding == "good-is-slow" and outcome.culprit == []
    assert outcome.verdict.startswith("The good settings are slow too")
    assert runner.results[-1].spec["settings"]["num_workers"] == 0  # the good settings, run last


def test_good_settings_slow_once_found_by_the_confirmation():
    """A culprit of one setting: its healthy neighbour is the good settings, which the
    confirmation runs again; found slow there, the bisect says so instead of naming it."""
    seen = []

    def flaky(settings):
        seen.append(settings)
        return settings.cache_clear == "never" or (settings == DEFAULT_GOOD and seen.count(settings) == 1)

    outcome = bisect(BAD, DEFAULT_GOOD, TableRunner(flaky))
    assert outcome.finding == "good-is-slow" and outcome.culprit == []


def test_json_contract():
    runner = TableRunner(lambda s: s.num_workers > 0 and s.persistent_workers)
    outcome = bisect(BAD, DEFAULT_GOOD, runner)
    data = bisect_json(outcome, runner)
    assert data["culprit"] == ["num_workers", "persistent_workers"]
    assert isinstance(data["verdict"], str) and data["verdict"]
    for trial in data["trials"]:
        assert {"settings", "status", "epoch_s", "ratio", "ratio_ci"} <= set(trial)
        assert trial["settings"]["device"] == "cpu"
    assert data["full_factorial"] == 8


def test_a_culprit_that_does_not_hold_up_when_run_again_is_not_named():
    """The machine was busy during one trial: num_workers=4 alone looked slow once."""
    seen = []

    def flaky(settings):
        seen.append(settings)
        alone = settings.num_workers > 0 and not settings.persistent_workers and settings.cache_clear != "never"
        return (alone and seen.count(settings) == 1) or settings == BAD

    outcome = bisect(BAD, DEFAULT_GOOD, TableRunner(flaky))
    assert outcome.finding == "inconclusive" and outcome.culprit == []
    assert outcome.verdict.startswith("Inconclusive: the trials disagree")
    assert "Run again, changing num_workers was healthy, not slow." in outcome.disagreements


def test_a_neighbour_that_was_healthy_only_once_is_still_caught():
    """num_workers=4 alone is slow, but its first trial said healthy (a busy moment), so
    ddmin ends on num_workers + persistent_workers. The confirmation's neighbour with the
    rest added, {num_workers, cache_clear}, is slow: the neighbour is then run again alone,
    slow this time, and no culprit is named."""
    seen = []

    def flaky(settings):
        seen.append(settings)
        alone = settings.num_workers > 0 and not settings.persistent_workers and settings.cache_clear != "never"
        return settings.num_workers > 0 and not (alone and seen.count(settings) == 1)

    runner = TableRunner(flaky)
    outcome = bisect(BAD, DEFAULT_GOOD, runner)
    assert outcome.finding == "inconclusive" and outcome.culprit == []
    assert "Run again, changing num_workers was slow, not healthy." in outcome.disagreements
    assert runner.replicates[-4:] == [2, 0, 2, 0]  # culprit again, neighbour + rest, neighbour again, rest


def test_a_slow_subset_inside_a_healthy_superset_is_a_contradiction():
    """The issue's false culprit: num_workers=4 alone 'slow' while num_workers=4 with
    persistent workers was healthy. Settings that only add to each other cannot do that
    unless the measurements are off."""
    def contradictory(settings):
        if settings == BAD:
            return True
        return settings.num_workers > 0 and not settings.persistent_workers

    outcome = bisect(BAD, DEFAULT_GOOD, TableRunner(contradictory))
    assert outcome.finding == "inconclusive" and outcome.culprit == []
    assert any("changing num_workers was slow (1.60x, 1.60x) while changing num_workers + persistent_workers, which "
               "includes it, was healthy (1.00x)" in d for d in outcome.disagreements)


def test_a_contended_bad_run_is_inconclusive_not_a_verdict():
    runner = TableRunner(lambda s: None, slow_status="slow")
    runner.failing = lambda settings, replicate=0: (runner.results.append(TrialResult(
        key="c", spec=TrialSpec(runner.template.command, settings).describe(), status="contended", ratio=1.8,
        ratio_ci=[1.6, 2.0], outside_load={"1": 0.02, "2": 0.48})), None)[1]
    outcome = bisect(BAD, DEFAULT_GOOD, runner)
    assert outcome.finding == "inconclusive" and outcome.culprit == []
    assert outcome.verdict == ("Inconclusive: the machine was busy with other work while the bad settings ran "
                               "(outside CPU load epoch 1 2%, epoch 2 48%), so their timing says nothing. "
                               "Rerun on a quiet machine.")


def test_every_bisect_trial_ends_as_soon_as_its_verdict_is_clear():
    """Issue 24: bisect needs verdicts, not whole runs; the sequential test itself is
    tested in test_slowdown.py, the trial's result in test_harness.py."""
    runner = TableRunner(lambda s: s.num_workers > 0 and s.persistent_workers)
    assert not runner.template.stop_when_healthy
    bisect(BAD, DEFAULT_GOOD, runner)
    assert runner.template.stop_when_healthy
    spec = runner.template
    assert spec.describe()["stop_when_healthy"] is True
    assert "stop_when_healthy" not in TrialSpec(spec.command).describe()  # other commands' keys unchanged
