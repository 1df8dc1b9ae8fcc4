import json

import pytest

from dcnprobe.errors import UsageError
from dcnprobe.harness.runner import TrialResult
from dcnprobe.harness.spec import TrialSpec
from dcnprobe.harness.trials import CONFIRM_REPLICATE, describe_settings
from dcnprobe.settings import Settings
from dcnprobe.sweep import combinations, parse_vary, sweep, sweep_json

from conftest import TINY_BATCH, builtin_spec


class RuleRunner:
    """Answers like TrialRunner.trial, from a rule over (settings, replicate)."""

    def __init__(self, slow_when):
        self.slow_when = slow_when
        self.template = builtin_spec()
        self.reference, self.shown = Settings(), ()
        self.results: list[TrialResult] = []
        self.lines: list[str] = []
        self.ran = self.reused = 0

    def report(self, line):
        self.lines.append(line)

    def trial(self, settings, replicate=0):
        slow = self.slow_when(settings, replicate)
        spec = TrialSpec(self.template.command, settings, replicate=replicate).describe()
        self.results.append(TrialResult(key=str(len(self.results)), spec=spec, status="slow" if slow else "ok",
                                        ratio=1.5 if slow else 1.0, ratio_ci=[1.4, 1.6] if slow else [0.95, 1.05]))
        self.ran += 1
        return self.results[-1]


def test_a_combination_slow_once_and_healthy_when_run_again_is_not_counted():
    # Two workers: slow in its first run only (the run-to-run spread of a small loop on 2
    # cores); four workers: slow both times. Zero workers is healthy and never rerun.
    runner = RuleRunner(lambda s, replicate: s.num_workers == 4 or (s.num_workers == 2 and replicate == 0))
    outcome = sweep(Settings(device="cpu"), {"num_workers": [0, 2, 4]}, runner)
    assert [r.settings["num_workers"] for r in outcome.slow] == [4]
    assert [r.settings["num_workers"] for r in outcome.unconfirmed] == [2]
    assert [(r.settings["num_workers"], r.spec["replicate"]) for r in outcome.rechecks] == [
        (2, CONFIRM_REPLICATE), (4, CONFIRM_REPLICATE)]
    assert outcome.summary().startswith("1 of 3 runnable combinations are slow (1 more came out slow once and "
                                        "healthy when run again: not counted")
    document = sweep_json(outcome, runner)
    assert len(document["trials"]) == 5 and [u["num_workers"] for u in document["unconfirmed"]] == [2]


def test_a_sweep_with_nothing_slow_runs_each_combination_once():
    runner = RuleRunner(lambda s, replicate: False)
    outcome = sweep(Settings(device="cpu"), {"num_workers": [0, 2]}, runner)
    assert runner.ran == 2 and not outcome.rechecks and not outcome.slow


def test_parse_vary_uses_each_settings_parser():
    assert parse_vary(["num_workers=0,2", "persistent-workers=true,false"]) == {
        "num_workers": [0, 2], "persistent_workers": [True, False]}
    with pytest.raises(UsageError):
        parse_vary(["num_workers=0,two"])
    with pytest.raises(UsageError):
        parse_vary(["colour=red"])


def test_the_matrix_is_the_product():
    combos = combinations({"num_workers": [0, 2], "loader": ["batched", "per-sample"]})
    assert len(combos) == 4 and {"num_workers": 2, "loader": "per-sample"} in combos


def test_a_sweeps_labels_name_the_varied_settings_even_where_they_equal_the_base():
    # A sweep over device=cpu,cuda on a machine whose base resolves to cuda once labelled
    # the cuda trial "(the reference settings)", hiding the very value being compared.
    base = Settings(device="cuda", num_workers=2)
    assert describe_settings(base, base) == "(the reference settings)"
    assert describe_settings(base, base, shown=("device",)) == "device=cuda"
    assert describe_settings(base.with_changes({"device": "cpu"}), base, shown=("device",)) == "device=cpu"


@pytest.mark.slow
def test_a_real_sweep_with_an_impossible_combination(tiny_data, tmp_path, capsys):
    from dcnprobe.cli import main

    main(["sweep", "--vary", "num_workers=0,2", "--vary", "persistent_workers=true,false", "--set", "device=cpu",
          "--data", tiny_data, "--batch-size", str(TINY_BATCH), "--max-batches", "12", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "sweep.json").read_text())
    assert len(result["trials"]) == 3  # 0 workers with persistence cannot run
    assert result["invalid"][0]["settings"] == {"num_workers": "0", "persistent_workers": "true"}
    # 12 batches an epoch are too few to call a trial slow: whatever the machine's noise,
    # every trial must come back measured and healthy rather than crashed or slow.
    assert [t["status"] for t in result["trials"]] == ["ok", "ok", "ok"]
    assert (tmp_path / "report.html").stat().st_size > 10_000  # the plots are embedded
    assert "0 of 3 runnable combinations are slow" in capsys.readouterr().out
