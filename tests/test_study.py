"""dcnprobe study: statistics, criteria, resume, and a real small study checked against
an independent computation from the trials' summary.json files."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dcnprobe.errors import UsageError
from dcnprobe.harness.resume import last_checkpoint_epoch, trim_record
from dcnprobe.study.plan import Criteria, parse_seeds
from dcnprobe.study.stats import estimate, t_quantile
from dcnprobe.study.summary import SeedRun, summarize_study

from conftest import TINY_BATCH, TINY_DATA

# Two-sided 95% Student-t critical values from a printed table, by degrees of freedom.
T_TABLE = {1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262}
STUDY_ARGS = ["--presets", "phase1,phase3-revised", "--seeds", "2", "--epochs", "2", "--max-batches", "6",
              "--data", TINY_DATA, "--batch-size", str(TINY_BATCH), "--device", "cpu"]


def test_t_quantiles_match_the_table():
    for df, value in T_TABLE.items():
        assert t_quantile(0.975, df) == pytest.approx(value, abs=5e-4)


def test_estimate_is_mean_sample_std_and_t_interval():
    e = estimate([0.58, 0.60, 0.59, 0.61, 0.57])
    half = T_TABLE[4] * np.std([0.58, 0.60, 0.59, 0.61, 0.57], ddof=1) / math.sqrt(5)
    assert e.mean == pytest.approx(0.59) and e.low == pytest.approx(0.59 - half, abs=1e-4)
    assert estimate([0.5]).std is None and estimate([]) is None


def test_the_reports_gap_criterion_counts_a_negative_gap_as_healthy():
    report = Criteria()
    assert report.gap_healthy(-0.0549)  # the report's own tick
    assert report.gap_healthy(0.05) and not report.gap_healthy(0.01) and not report.gap_healthy(0.2)
    assert not Criteria(negative_gap_ok=False).gap_healthy(-0.0549)


def test_seeds_are_a_count_from_the_reports_seed_or_a_list():
    assert parse_seeds("3") == (42, 43, 44)
    assert parse_seeds("1,7") == (1, 7)
    with pytest.raises(UsageError):
        parse_seeds("three")


def _epoch(epoch, val_auc, train_auc, gate=0.3):
    return {"epoch": epoch, "val_auc": val_auc, "train_auc": train_auc, "gap": train_auc - val_auc,
            "gate_mean": gate, "gate_min": gate - 0.1, "gate_max": gate + 0.1, "train_loss": 0.3, "val_loss": 0.25}


def test_summary_leaves_incomplete_trials_out_and_judges_the_means():
    runs = [SeedRun("a", 1, 3, [_epoch(1, 0.58, 0.52), _epoch(2, 0.59, 0.55), _epoch(3, 0.585, 0.57)]),
            SeedRun("a", 2, 3, [_epoch(1, 0.57, 0.52), _epoch(2, 0.578, 0.55), _epoch(3, 0.576, 0.58)]),
            SeedRun("a", 3, 3, [_epoch(1, 0.60, 0.52)]),  # stopped as slow after epoch 1
            SeedRun("b", 1, 3, [_epoch(1, 0.56, 0.52), _epoch(2, 0.55, 0.55), _epoch(3, 0.54, 0.57)]),
            SeedRun("b", 2, 3, [_epoch(1, 0.55, 0.52), _epoch(2, 0.54, 0.55), _epoch(3, 0.53, 0.58)])]
    summary = summarize_study(runs, ["a", "b"], Criteria(), 3)
    a, b = summary.presets
    assert a.seeds == [1, 2] and a.excluded == {3: "1 of 3 epochs"}
    assert a.at_best["val_auc"].mean == pytest.approx((0.59 + 0.578) / 2)
    assert a.best_epochs == {2: 2} and b.best_epochs == {1: 2}
    checks = {c.criterion: c.passed for c in summary.checks["a"]}
    assert checks["best val AUC"] and checks["best epoch moves off epoch 1"]
    assert not {c.criterion: c.passed for c in summary.checks["b"]}["best val AUC"]
    delta = next(d for d in summary.deltas if d.metric == "val_auc")
    assert delta.differences == pytest.approx({1: 0.56 - 0.59, 2: 0.55 - 0.578})


def test_a_resumed_record_keeps_only_the_checkpointed_epochs(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "epoch-1.pt").write_bytes(b"")
    lines = ['{"type":"header","schema":1}', '{"type":"batch","epoch":1}', '{"type":"epoch","epoch":1}',
             '{"type":"batch","epoch":2}', '{"type":"batch","ep']  # killed mid-line in epoch 2
    (tmp_path / "run.jsonl").write_text("\n".join(lines))
    assert last_checkpoint_epoch(tmp_path) == 1
    trim_record(tmp_path, 1)
    assert (tmp_path / "run.jsonl").read_text().splitlines() == lines[:3]


def independent_numbers(out):
    """What the report must say, computed here from the trials' own summary.json files."""
    study = json.loads((out / "study.json").read_text())
    by_preset = {}
    for trial in study["trials"]:
        summary = json.loads((Path(trial["run_dir"]) / "summary.json").read_text())
        best = max(summary["epochs"], key=lambda e: e["val_auc"])
        by_preset.setdefault(trial["preset"], {})[trial["seed"]] = best
    return study, by_preset


@pytest.fixture(scope="module")
def local_study(tmp_path_factory, tiny_data):
    from dcnprobe.cli import main

    out = tmp_path_factory.mktemp("study")
    main(["study", *STUDY_ARGS, "--out", str(out)])
    return out


@pytest.mark.slow  # four trials in fresh processes: 45-90 s on 2 busy cores
def test_a_small_study_reports_what_the_trials_measured(local_study):
    study, by_preset = independent_numbers(local_study)
    assert [(t["preset"], t["seed"]) for t in study["trials"]] == [
        ("phase1", 42), ("phase1", 43), ("phase3-revised", 42), ("phase3-revised", 43)]
    assert all(t["status"] in ("ok", "contended") and t["epochs_done"] == 2 for t in study["trials"])
    for preset in study["presets"]:
        bests = by_preset[preset["preset"]]
        auc = np.array([bests[s]["val_auc"] for s in (42, 43)])
        half = T_TABLE[1] * auc.std(ddof=1) / math.sqrt(2)
        got = preset["at_best"]["val_auc"]
        assert got["mean"] == pytest.approx(auc.mean()) and got["std"] == pytest.approx(auc.std(ddof=1))
        # the table's t is rounded to 3 decimals
        assert (got["low"], got["high"]) == pytest.approx((auc.mean() - half, auc.mean() + half), abs=1e-5)
        gaps = [bests[s]["train_auc"] - bests[s]["val_auc"] for s in (42, 43)]
        assert preset["at_best"]["gap"]["mean"] == pytest.approx(np.mean(gaps))
        assert preset["gate_range"] == pytest.approx([min(bests[s]["gate_min"] for s in bests),
                                                      max(bests[s]["gate_max"] for s in bests)])
    delta = next(d for d in study["deltas"] if d["metric"] == "val_auc")
    expected = [by_preset["phase3-revised"][s]["val_auc"] - by_preset["phase1"][s]["val_auc"] for s in (42, 43)]
    assert delta["estimate"]["mean"] == pytest.approx(np.mean(expected))
    report = (local_study / "report.md").read_text()
    assert f"{np.mean([by_preset['phase1'][s]['val_auc'] for s in (42, 43)]):.4f}" in report
    assert "speed verdict" in report and "best val AUC" in report
    assert (local_study / "report.html").stat().st_size > 10_000  # the plots are embedded
    assert (local_study / "plots" / "val_auc.png").is_file() and (local_study / "plots" / "gate_mean.png").is_file()


@pytest.mark.slow  # four trials in fresh processes: 45-90 s on 2 busy cores
def test_running_the_study_again_reuses_every_trial(local_study, capsys):
    from dcnprobe.cli import main

    before = json.loads((local_study / "study.json").read_text())
    main(["study", *STUDY_ARGS, "--out", str(local_study)])
    after = json.loads((local_study / "study.json").read_text())
    assert after["trials_run"] == 0 and after["trials_cached"] == 4 and after["epochs_reused"] == 8
    assert after["presets"] == before["presets"]
    assert "cached: 4" in capsys.readouterr().out


@pytest.mark.slow
def test_a_killed_study_resumes_from_the_last_checkpoint(tmp_path, tiny_data):
    args = [sys.executable, "-m", "dcnprobe", "study", "--presets", "phase1", "--seeds", "2", "--epochs", "3",
            "--max-batches", "6", "--data", tiny_data, "--batch-size", str(TINY_BATCH), "--device", "cpu",
            "--out", str(tmp_path)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmp_path.glob("trials/*/checkpoints/epoch-1.pt")):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # the trial dies with it (parent-death signal)
    proc.wait()
    assert list(tmp_path.glob("trials/*/checkpoints/epoch-1.pt")), "no checkpoint appeared"
    assert not (tmp_path / "study.json").exists()

    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    study = json.loads((tmp_path / "study.json").read_text())
    first = study["trials"][0]
    assert first["resumed_from"] and first["resumed_from"] >= 1 and first["epochs_done"] == 3
    assert study["epochs_reused"] >= 1 and "resumed after epoch" in done.stdout
    # The resumed trial's record holds every epoch once, epoch 1 from the killed run.
    epochs = [json.loads(line)["epoch"] for line in (Path(first["run_dir"]) / "run.jsonl").read_text().splitlines()
              if '"type":"epoch"' in line]
    assert epochs == [1, 2, 3]
