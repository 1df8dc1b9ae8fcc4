"""Executors: the local one, Ray (a real local cluster), and the refusals."""

import json
import sys

import pytest

from dcnprobe.errors import UsageError
from dcnprobe.harness.executor import LocalExecutor, TrialResources, make_executor

from conftest import TINY_BATCH, TINY_DATA

STUDY_ARGS = ["--presets", "phase1,phase3-revised", "--seeds", "2", "--epochs", "2", "--max-batches", "6",
              "--data", TINY_DATA, "--batch-size", str(TINY_BATCH), "--device", "cpu"]


def test_local_is_the_default():
    assert isinstance(make_executor(None), LocalExecutor)


def test_ray_missing_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if not installed
    with pytest.raises(UsageError, match=r"pip install -c constraints.txt -e '\.\[ray\]'"):
        make_executor("local")


def test_bisect_refuses_ray_with_its_reason(capsys):
    from dcnprobe.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["bisect", "--ray", "--max-batches", "10"])
    assert exit_.value.code == 2
    assert "one trial at a time" in capsys.readouterr().err


def per_seed_metrics(out):
    study = json.loads((out / "study.json").read_text())
    timing = ("wall_s", "train_s")
    return {(t["preset"], t["seed"]): [{k: v for k, v in e.items() if k not in timing} for e in t["epochs"]]
            for t in study["trials"]}, study


def start_ray():
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -c constraints.txt -e '.[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    return ray


@pytest.fixture(scope="module")
def ray_cluster():
    """One real local cluster for the module: starting one takes seconds."""
    ray = start_ray()
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_a_study_on_ray_matches_the_local_one_and_resumes_locally(tmp_path, tiny_data):
    """Same specs, same numbers: trials pin their threads, so where they run does not
    change them; the cache written through Ray serves a local rerun."""
    from dcnprobe.cli import main

    ray = start_ray()
    main(["study", *STUDY_ARGS, "--out", str(tmp_path / "ray"), "--ray"])
    on_ray, study = per_seed_metrics(tmp_path / "ray")
    assert study["executor"].startswith("ray") and study["trials_run"] == 4
    assert all(t["status"] in ("ok", "contended") for t in study["trials"])
    ray.shutdown()

    main(["study", *STUDY_ARGS, "--out", str(tmp_path / "local")])
    local, _ = per_seed_metrics(tmp_path / "local")
    assert on_ray == local

    main(["study", *STUDY_ARGS, "--out", str(tmp_path / "ray")])  # locally, over Ray's cache
    again, study = per_seed_metrics(tmp_path / "ray")
    assert study["trials_cached"] == 4 and study["executor"] == "local" and again == on_ray


@pytest.mark.slow  # two trials on Ray: about 40 s on 2 busy cores
def test_a_study_runs_as_ray_tasks(ray_cluster, tmp_path, tiny_data):
    """Two trials packed on a 2-CPU cluster, one CPU each; results cached by the driver."""
    from dcnprobe.cli import main

    args = ["--presets", "phase1", *STUDY_ARGS[2:], "--out", str(tmp_path)]
    main(["study", *args, "--ray"])
    _, study = per_seed_metrics(tmp_path)
    assert study["executor"] == "ray (local, 1 CPU per trial)" and study["trials_run"] == 2
    assert all(t["epochs_done"] == 2 for t in study["trials"])
    assert len(list(tmp_path.glob("trials/*/result.json"))) == 2


@pytest.mark.slow  # starting a Ray cluster is 7 s of the default suite's 90
def test_timed_trials_ask_ray_for_a_whole_node(ray_cluster):
    from dcnprobe.harness.executor import RayExecutor

    executor = RayExecutor(resources=TrialResources(whole_node=True))
    assert executor.options["num_cpus"] == 2 and not executor.owned  # the test's cluster stays the test's
