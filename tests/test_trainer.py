import json
from dataclasses import asdict

import numpy as np
import pytest
from dcnprobe.model.trainer import TrainJob, fit

from dcnprobe.settings import Settings

from conftest import TINY_BATCH


def job(tiny_data, tmp_path=None, **changes):
    settings = Settings(batch_size=TINY_BATCH, device="cpu", **changes.pop("settings", {}))
    return TrainJob(settings=settings, preset="phase1", epochs=changes.pop("epochs", 2), data=tiny_data,
                    out=tmp_path, **changes)


def comparable(result):
    """Everything but timings."""
    return [{k: v for k, v in asdict(e).items() if not k.endswith("_s")} for e in result.epochs]


def test_model_learns(tiny_data):
    result = fit(job(tiny_data, epochs=3))
    assert result.epochs[-1].val_auc > 0.62, "the model stopped learning"
    assert result.epochs[-1].train_loss < result.epochs[0].train_loss


def test_metrics_are_complete_and_gate_stays_inside_unit_interval(tiny_data):
    result = fit(job(tiny_data, epochs=1, max_batches=5))
    e = result.epochs[0]
    assert e.batches == 5
    assert 0.0 < e.gate_min <= e.gate_mean <= e.gate_max < 1.0
    assert e.gap == pytest.approx(e.train_auc - e.val_auc)
    assert result.best_epoch == 1


@pytest.mark.slow  # two full runs; resume_continues_exactly[0] checks exactness in the default suite
def test_fixed_seed_is_deterministic_on_cpu(tiny_data):
    assert comparable(fit(job(tiny_data))) == comparable(fit(job(tiny_data)))
    other = fit(job(tiny_data, settings={"seed": 7}))
    assert comparable(other) != comparable(fit(job(tiny_data)))


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_resume_continues_exactly(tiny_data, tmp_path, workers):
    settings = {"num_workers": workers, "persistent_workers": workers > 0}
    straight = fit(job(tiny_data, tmp_path / "straight", epochs=3, settings=settings))
    fit(job(tiny_data, tmp_path / "resumed", epochs=1, settings=settings))
    resumed = fit(job(tiny_data, tmp_path / "resumed", epochs=3, resume=True, settings=settings))
    assert comparable(resumed) == comparable(straight)
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2, 3]
    assert summary["best_epoch"] == straight.best_epoch
    assert summary["settings"]["num_workers"] == workers


def test_resume_refuses_a_different_run(tiny_data, tmp_path):
    from dcnprobe.errors import UsageError

    fit(job(tiny_data, tmp_path, epochs=1))
    with pytest.raises(UsageError, match="different run"):
        fit(job(tiny_data, tmp_path, epochs=2, resume=True, settings={"seed": 1}))


def test_cache_clearing_every_batch_is_timed_as_its_own_phase(tiny_data, tmp_path):
    from dcnprobe.probe import Probe
    from dcnprobe.runs import read_run

    fit(job(tiny_data, epochs=1, max_batches=4, settings={"cache_clear": "every:2"}), probe=Probe(tmp_path))
    clears = read_run(tmp_path).batches["cache_clear"].to_numpy()
    assert (clears[[1, 3]] > 0).all() and (clears[[0, 2]] == 0).all()
    assert np.all(clears >= 0)
