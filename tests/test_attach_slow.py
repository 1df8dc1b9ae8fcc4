"""The attach on real slowdowns and hangs, and with spawned workers: tens of seconds each
(`pytest -m slow`)."""

import json
import sys
from pathlib import Path

import pytest

from dcnprobe.attach.notes import read_notes
from dcnprobe.cli import main
from dcnprobe.runs import read_run

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = pytest.mark.slow


def dcnprobe_run(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_a_history_scan_in_the_loop_is_found_slow_in_its_own_code(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = dcnprobe_run(capsys, "--out", str(out), "--threads", "1", "--", sys.executable,
                                   str(EXAMPLES / "per_sample_loop.py"), "--epochs", "3", "--fault", "history-scan")
    assert code == 0
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["slowdown"] and analysis["grew"] == "other", analysis["verdict"]


def test_workers_that_hang_are_a_stall_with_stacks(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = dcnprobe_run(capsys, "--out", str(out), "--threads", "1", "--num-workers", "2",
                                "--stall-after", "2", "--", sys.executable, str(EXAMPLES / "per_sample_loop.py"),
                                "--rows", "2048", "--fault", "hang")
    assert code == 3
    run = read_run(out)
    assert run.status == "stalled" and run.stalls[0]["epoch"] == 2
    assert len(run.stalls[0]["workers"]) == 2 and (out / "stacks").is_dir()
    assert run.batches.groupby("epoch").size()[1] == 32


def test_spawned_workers_never_record(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = dcnprobe_run(capsys, "--out", str(out), "--threads", "1", "--num-workers", "2",
                                   "--start-method", "spawn", "--sample-interval", "0.1", "--", sys.executable,
                                   str(EXAMPLES / "per_sample_loop.py"), "--rows", "1024", "--epochs", "2")
    assert code == 0
    run = read_run(out)
    assert run.batches.groupby("epoch").size().to_dict() == {1: 16, 2: 16}
    assert read_notes(out)["final"]["loaders"][0]["start_method"] == "spawn"
    assert len(list(out.glob(".attach-*.claim"))) == 1
    assert sum('"type":"header"' in line for line in (out / "run.jsonl").read_text().splitlines()) == 1
    assert run.workers["pid"].nunique() >= 2
