"""The reference benchmark's plumbing: what it says when FuxiCTR is not there, how the
runner carries a skipped measure, and (slow) one real comparison where it is."""

import pytest
from dcnprobe.benchmarks import reference, runner
from dcnprobe.benchmarks.timing import WARMUP_BATCHES


def test_without_the_dcnv3_source_every_measure_is_skipped_in_one_line(monkeypatch, capsys):
    monkeypatch.delenv(reference.SOURCE_ENV, raising=False)
    results = reference.run("full")
    assert set(results) == {reference.SAME.measure, *(c.measure for c in reference.GATED)}
    assert all(entry["value"] is None and entry["skipped"] for entry in results.values())
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("reference: skipped: ")
    # Either the package is missing (a checkout without the extra) or the model_zoo folder is.
    assert "fuxictr" in printed[0] and ("not importable" in printed[0] or reference.SOURCE_ENV in printed[0])


def test_a_folder_without_fuxictrs_dcnv3_is_named(monkeypatch, tmp_path):
    pytest.importorskip("fuxictr")
    monkeypatch.setenv(reference.SOURCE_ENV, str(tmp_path))
    with pytest.raises(reference.Unavailable, match="has no src/DCNv3.py"):
        reference.load_reference()


def test_a_dcnv3_that_does_not_import_is_one_line_not_a_traceback(monkeypatch, tmp_path):
    pytest.importorskip("fuxictr")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "DCNv3.py").write_text("")
    (tmp_path / "src" / "__init__.py").write_text("from .DCNv3 import DCNv3\n")
    monkeypatch.setenv(reference.SOURCE_ENV, str(tmp_path))
    with pytest.raises(reference.Unavailable, match="does not import: ImportError"):
        reference.load_reference()
    entry = reference.measure_same_architecture("quick")
    assert entry["value"] is None and "does not import" in entry["skipped"]


def test_a_skipped_measure_is_not_judged_and_its_reason_is_in_the_summary():
    baseline = {"thresholds": {"trainer_vs_fuxictr": ">= 1.2"}, "higher_is_better": ["trainer_vs_fuxictr"]}
    results = {"trainer_vs_fuxictr": reference.skipped("trainer_vs_fuxictr", "fuxictr is not installed")}
    rows = runner.check(results, baseline, None)
    assert rows == []
    text = runner.summary(results, rows, baseline, "quick")
    assert "Note: trainer_vs_fuxictr skipped: fuxictr is not installed" in text
    assert "all 0 thresholds pass" in text


def test_the_gate_measure_is_in_the_quick_profile_with_a_threshold():
    import json

    group = runner._groups()["reference"]
    assert "quick" in group.profiles and reference.SAME.measure in group.remeasure
    baseline = json.loads(runner.BASELINE.read_text())
    assert baseline["thresholds"][reference.SAME.measure].startswith(">=")
    assert reference.SAME.measure in baseline["higher_is_better"]


@pytest.mark.slow
def test_one_real_comparison_against_fuxictr(monkeypatch):
    try:
        ref = reference.load_reference()
    except reference.Unavailable as exc:
        pytest.skip(str(exc))
    monkeypatch.setitem(reference.ROUNDS, "tiny", (2, WARMUP_BATCHES + 2))  # 2 timed batches a block
    entry = reference.compare(reference.SAME, "tiny", ref)
    low, high = entry["interval"]
    assert entry["value"] > 0 and low <= high
    detail = entry["detail"]
    assert detail["ours_samples_per_s"] > 0 and detail["fuxictr_samples_per_s"] > 0
    assert detail["batches_each"] == 2 * 2
