"""The trainer's numbers do not move when the step is made faster.

Golden values were recorded at commit 765c2d3 ("ruff: import order after the rename"), the
last commit before the step was sped up (issue 24), with one intra-op thread so that the
order of floating-point sums is fixed. A faster step may sum in another order (a fused
matmul, one batched projection), which moves losses in the 7th digit; the report compares
validation AUC to 4 decimals, so that is what must hold, and the losses to 1e-5.
"""

from dataclasses import dataclass

import pytest
import torch
from dcnprobe.model.gated_dcnv3 import ModelConfig
from dcnprobe.model.trainer import TrainJob, fit

from dcnprobe.settings import Settings


@dataclass(frozen=True)
class Golden:
    preset: str
    tri_bce: bool
    # per epoch: (train loss, val loss, val AUC, gate mean)
    epochs: tuple[tuple[float, float, float, float], ...]


GOLDEN = [
    # Label smoothing 0.05, dropout 0.25, one BCE term.
    Golden("phase3-revised", False, ((0.6808046698570251, 0.6662335395812988, 0.5206451039309773, 0.4673699736595154),
                                     (0.6564475297927856, 0.6337577104568481, 0.6115908294377471, 0.4605093002319336))),
    # No smoothing, dropout 0.20, the Tri-BCE loss's three terms.
    Golden("phase1", True, ((0.6783377528190613, 0.6011242270469666, 0.6425571968271803, 0.4538815915584564),
                            (0.6205257177352905, 0.5287829637527466, 0.6862499871149297, 0.42540764808654785))),
]


@pytest.mark.parametrize("golden", GOLDEN, ids=lambda g: f"{g.preset}-tri{int(g.tri_bce)}")
def test_same_seed_same_metrics_as_before_the_speed_work(tiny_data, golden: Golden):
    job = TrainJob(settings=Settings(device="cpu", batch_size=512, threads=1, seed=42), preset=golden.preset,
                   epochs=2, data=tiny_data, model=ModelConfig(tri_bce=golden.tri_bce), checkpoints=False)
    threads = torch.get_num_threads()
    try:
        result = fit(job)
    finally:
        torch.set_num_threads(threads)  # fit sets it process-wide
    measured = [(e.train_loss, e.val_loss, e.val_auc, e.gate_mean) for e in result.epochs]
    for epoch, (got, want) in enumerate(zip(measured, golden.epochs), start=1):
        train_loss, val_loss, val_auc, gate_mean = got
        assert round(val_auc, 4) == round(want[2], 4), f"epoch {epoch}: val AUC {val_auc} != {want[2]}"
        assert train_loss == pytest.approx(want[0], abs=1e-5), f"epoch {epoch}: train loss"
        assert val_loss == pytest.approx(want[1], abs=1e-5), f"epoch {epoch}: val loss"
        assert gate_mean == pytest.approx(want[3], abs=1e-4), f"epoch {epoch}: gate mean"
