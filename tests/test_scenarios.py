"""Ground truth: each scenario, run for real for 2 epochs, is analysed to the cause it
declares; a clean run is not called slow. Slow: about 40 s per scenario on a quiet
2-core machine (shape-recompile and spawn-respawn take longer). A scenario this machine
cannot reproduce (memory-knee without a memory cgroup) is skipped, saying why."""

import pytest
from dcnprobe.benchmarks.confusion import CLEAN_SEEDS, run_scenario
from dcnprobe.model.faults import FAULTS


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAULTS))
def test_scenario_is_analysed_to_its_declared_cause(name, tmp_path):
    why_not = FAULTS[name].unavailable()
    if why_not:
        pytest.skip(f"{name}: {why_not}")
    row = run_scenario(name, tmp_path, max_batches=100)
    assert row.found == FAULTS[name].cause, f"{name}: found {row.found} ({row.status}, ratio {row.ratio})"


@pytest.mark.slow
@pytest.mark.parametrize("seed", CLEAN_SEEDS)
def test_clean_run_is_never_called_slow(seed, tmp_path):
    row = run_scenario("clean", tmp_path, max_batches=100, seed=seed)
    assert row.status == "ok" and row.found == "none", f"clean seed {seed}: {row.status}, {row.found}"
