"""The analysis on synthetic records whose right answers are known."""

import json

import pytest
from synthetic_runs import MB, write_run

from dcnprobe.analysis import analyze_run, write_analysis
from dcnprobe.analysis.causes import CAUSE_IDS


def analyze(tmp_path, **kwargs):
    return analyze_run(write_run(tmp_path, **kwargs))


def test_clean_run_is_not_slow_and_names_no_cause(tmp_path):
    a = analyze(tmp_path)
    assert not a.slowdown
    assert a.signals.ratio_ci[0] < 1.0 < a.signals.ratio_ci[1]
    assert a.top_cause == "none"
    assert a.signals.change is None


def test_step_slowdown_is_slow_with_phase_and_change_point(tmp_path):
    a = analyze(tmp_path, slowdown=1.6, slow_phase="backward")
    assert a.slowdown
    assert a.signals.ratio == pytest.approx(1.6, rel=0.05)
    assert a.signals.ratio_ci[0] > 1.2
    assert a.signals.grew == "backward"
    epoch, batch = a.signals.change_epoch_batch
    assert epoch == 2 and batch <= 8  # the warm-up of epoch 2 is skipped


def test_small_slowdown_under_the_threshold_is_not_slow(tmp_path):
    assert not analyze(tmp_path, slowdown=1.08).slowdown


def test_ramp_in_the_loop_is_metric_accumulation(tmp_path):
    a = analyze(tmp_path, ramp_per_step=0.0008)
    assert a.slowdown and a.signals.grew == "other"
    assert a.top_cause == "metric-accumulation"
    assert a.signals.change.kind == "ramp"


def test_retained_tensors_with_flat_time_are_graph_retention(tmp_path):
    a = analyze(tmp_path, in_use_per_step=3 * MB)
    assert not a.slowdown
    assert a.top_cause == "graph-retention"
    assert "does not come back" in a.causes[0].evidence[0]


def test_retained_memory_with_rising_time_is_memory_pressure(tmp_path):
    a = analyze(tmp_path, in_use_per_step=8 * MB, ramp_per_step=0.0008)
    assert a.top_cause == "memory-pressure"
    assert "graph-retention" not in [c.id for c in a.causes]


def test_growing_heap_with_aligned_gc_spikes_is_gc_pressure(tmp_path):
    a = analyze(tmp_path, py_blocks_per_step=8000, in_use_per_step=0.5 * MB, gc_spikes_every=17, gc_spike_s=0.3)
    assert a.top_cause == "gc-pressure"
    assert "graph-retention" not in [c.id for c in a.causes]  # many small objects, not tensors


def test_worker_uss_growth_is_worker_memory_growth(tmp_path):
    a = analyze(tmp_path, workers=2, worker_uss_per_step=0.5 * MB)
    assert a.top_cause == "worker-memory-growth"
    assert "per worker" in a.causes[0].evidence[0]


def test_workers_replaced_each_epoch_do_not_look_like_growth(tmp_path):
    a = analyze(tmp_path, workers=4, new_workers_each_epoch=True)
    assert "worker-memory-growth" not in [c.id for c in a.causes]


def test_slow_worker_start_each_epoch_is_worker_respawn(tmp_path):
    a = analyze(tmp_path, epochs=3, workers=2, new_workers_each_epoch=True, first_wait_s=3.0)
    assert a.top_cause == "worker-respawn"


def test_mps_driver_growth_with_flat_current_is_device_allocator_retention(tmp_path):
    a = analyze(tmp_path, device={"driver": 2 * MB, "current": 0})
    assert a.top_cause == "device-allocator-retention"


def test_rss_growth_without_memory_in_use_is_allocator_fragmentation(tmp_path):
    a = analyze(tmp_path, rss_per_step=2 * MB)
    assert a.top_cause == "allocator-fragmentation"


def test_expensive_cache_clearing_is_named(tmp_path):
    a = analyze(tmp_path, cache_clear_s=0.03)
    assert a.top_cause == "cache-clearing-cost"


def test_stalled_run(tmp_path):
    a = analyze(tmp_path, stall=True)
    assert a.top_cause == "stall"
    assert "no batch finished for 40.0 s" in a.causes[0].evidence[0]
    assert a.verdict.startswith("Stalled")


def test_analysis_json_contract(tmp_path):
    a = analyze(tmp_path, slowdown=1.5)
    data = json.loads(write_analysis(a).read_text())
    for key in ("slowdown", "ratio", "ratio_ci", "change_point_batch", "grew", "causes", "memory"):
        assert key in data
    assert data["slowdown"] is True and len(data["ratio_ci"]) == 2
    assert all(c["id"] in CAUSE_IDS and c["evidence"] for c in data["causes"])


def test_a_run_cut_short_by_a_kill_is_analysed(tmp_path):
    path = write_run(tmp_path, slowdown=1.5)
    lines = (path / "run.jsonl").read_text().splitlines()
    (path / "run.jsonl").write_text("\n".join(lines[: len(lines) * 3 // 4]) + '\n{"type":"batch","ep')
    a = analyze_run(path)
    assert a.run.status == "incomplete" and a.slowdown


def test_one_epoch_only(tmp_path):
    a = analyze(tmp_path, epochs=1)
    assert a.signals.ratio is None and not a.slowdown
    assert "Only one epoch" in a.verdict


def test_too_few_batches_are_never_called_slow(tmp_path):
    a = analyze(tmp_path, batches=15, slowdown=2.0)
    assert a.signals.ratio == pytest.approx(2.0, rel=0.1)
    assert not a.slowdown
