"""The benchmark gate: thresholds parsed from strings, failures that name the measure."""

import json
import os
import subprocess
import sys
import time

import pytest

from benchmarks import machine_load
from benchmarks.gate import parse_threshold
from benchmarks.runner import BASELINE, check, summary


def test_absolute_bounds():
    t = parse_threshold("<= 1.10")
    assert t.check("epoch_ratio", 1.10) is None
    assert t.check("epoch_ratio", 1.11) == "epoch_ratio = 1.11 fails '<= 1.10'"
    assert parse_threshold(">= 1.0").check("accuracy", 0.875) == "accuracy = 0.875 fails '>= 1.0'"
    assert parse_threshold(" < 2 ").check("x", 1.5) is None


def test_relative_to_a_reference():
    t = parse_threshold("median:10%")
    assert t.check("samples_per_s", 95.0) is None  # no reference: nothing to compare with
    assert t.check("overhead", 1.09, reference=1.0) is None
    assert "more than 10% above the reference" in t.check("overhead", 1.11, reference=1.0)
    assert t.check("samples_per_s", 91.0, reference=100.0, higher_is_better=True) is None
    assert "below the reference" in t.check("samples_per_s", 89.0, reference=100.0, higher_is_better=True)


@pytest.mark.parametrize("text", ["1.1", "<=", "median:ten%", "mean 10%"])
def test_unparseable_thresholds(text):
    with pytest.raises(ValueError):
        parse_threshold(text)


def test_committed_baseline_parses_and_checks():
    baseline = json.loads(BASELINE.read_text())
    for text in baseline["thresholds"].values():
        parse_threshold(text)
    results = {"epoch_ratio": {"value": 1.33, "unit": "ratio"}, "probe_overhead": {"value": 1.004, "unit": "ratio"}}
    rows = check(results, baseline, reference=None)
    failures = [message for _, _, message in rows if message]
    assert failures == ["epoch_ratio = 1.33 fails '<= 1.10'"]
    text = summary(results, rows, baseline, "quick")
    assert "| epoch_ratio | 1.33 ratio | <= 1.10 | **FAIL** |" in text
    assert "1 of 2 thresholds failed" in text


def test_unknown_group_is_one_line():
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "nonsense"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["benchmarks: error: unknown group(s) nonsense (known: epoch, "
                                                "overhead, throughput, profilers, confusion)"]


@pytest.mark.slow
def test_a_planted_scenario_fails_the_gate_on_the_epoch_ratio(tmp_path):
    planted = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "epoch", "--plant", "unbounded-metric",
                              "--out", str(tmp_path / "planted.json")], capture_output=True, text=True, timeout=900)
    assert planted.returncode == 1, planted.stdout + planted.stderr
    failures = json.loads((tmp_path / "planted.json").read_text())["failures"]
    assert len(failures) == 1 and failures[0].startswith("epoch_ratio = ") and "fails '<= 1.10'" in failures[0]

    clean = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "epoch", "--out", str(tmp_path / "clean.json")],
                           capture_output=True, text=True, timeout=900)
    assert clean.returncode == 0, clean.stdout + clean.stderr


def test_other_load_is_the_machine_minus_our_own_share(monkeypatch):
    monkeypatch.setattr(machine_load.os, "cpu_count", lambda: 2)
    start = machine_load.CpuMark(wall=0.0, machine_busy=100.0, own=10.0)
    # 10 s on 2 CPUs = 20 CPU-seconds; the machine was busy 15 s, 5 of them ours
    assert machine_load.other_load(start, machine_load.CpuMark(10.0, 115.0, 15.0)) == pytest.approx(0.5)
    assert machine_load.other_load(start, machine_load.CpuMark(10.0, 105.0, 15.0)) == 0.0  # all ours
    assert machine_load.other_load(start, machine_load.CpuMark(10.0, None, 15.0)) is None  # no /proc/stat


@pytest.mark.skipif(not machine_load.PROC_STAT.exists(), reason="needs Linux /proc/stat")
def test_other_load_sees_a_busy_process_that_is_not_ours():
    # Started before the first mark and measured before it is reaped, so none of its
    # CPU time is counted as ours: it is "other work" sharing the machine.
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        start = machine_load.mark()
        time.sleep(1.5)
        end = machine_load.mark()
    finally:
        spinner.kill()
        spinner.wait()
    # One spinning process holds one whole CPU (most of one, allowing for scheduling).
    assert machine_load.other_load(start, end) >= 0.7 / (os.cpu_count() or 1)


def test_summary_warns_when_the_machine_was_shared():
    baseline = json.loads(BASELINE.read_text())
    results = {"epoch_ratio": {"value": 1.0, "unit": "ratio", "seconds": 120.0, "other_load": 0.4}}
    text = summary(results, check(results, baseline, None), baseline, "quick")
    assert "other work used 40% of the CPUs during a 120 s group" in text
    results["epoch_ratio"]["other_load"] = 0.02
    assert "other work" not in summary(results, check(results, baseline, None), baseline, "quick")
