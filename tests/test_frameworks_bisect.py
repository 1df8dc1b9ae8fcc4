"""A bisect of a PyTorch Lightning program with a worker fault planted under its DataLoader
names the setting that carries the fault into later epochs. Minutes: `pytest -m slow`,
with `.[frameworks]` installed (skipped without it)."""

import json
import sys
from pathlib import Path

import pytest

from dcnprobe.cli import main

pytestmark = pytest.mark.slow

PROGRAMS = Path(__file__).resolve().parent / "programs"


def test_bisect_names_the_setting_behind_a_worker_fault_in_a_lightning_program(tmp_path, capsys):
    pytest.importorskip("pytorch_lightning")
    out = tmp_path / "bisect"
    try:
        main(["bisect", "--max-batches", "100", "--out", str(out), "--", sys.executable,
              str(PROGRAMS / "lightning_fit.py"), "--fault", "worker-history", "--batch-size", "64",
              "--truth", str(tmp_path / "truth.json")])
    except SystemExit as exit_info:
        assert exit_info.code == 0, capsys.readouterr().err[-3000:]
    result = json.loads((out / "bisect.json").read_text())
    if result["finding"] == "inconclusive" and any(t["status"] == "contended" for t in result["trials"]):
        pytest.skip(f"the machine was busy: the bisect rightly named no culprit ({result['verdict']})")
    assert "persistent_workers" in result["culprit"], result["verdict"]
