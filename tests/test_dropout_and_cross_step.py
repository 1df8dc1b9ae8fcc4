"""model.dropout's masks and model.cross_step's hand-written backward."""

import pytest
import torch
from dcnprobe.model.cross_step import CrossTail
from dcnprobe.model.dropout import RESOLUTION, Dropout, keep_masks

CPU = torch.device("cpu")


@pytest.mark.parametrize("keep", [0.8, 0.75, 0.7, 0.5])
def test_a_mask_keeps_each_element_with_the_asked_probability(keep):
    torch.manual_seed(0)
    mask = keep_masks((1000, 1000), keep, CPU)
    kept = (mask > 0).double().mean().item()
    rounded = round(keep * RESOLUTION) / RESOLUTION
    assert abs(rounded - keep) <= 0.5 / RESOLUTION
    sigma = (rounded * (1 - rounded) / mask.numel()) ** 0.5
    assert abs(kept - rounded) < 5 * sigma, f"kept {kept:.5f} of elements, not {rounded:.5f}"
    # Kept elements carry 1/keep (of the rounded keep), so a mask averages to 1, as F.dropout's.
    assert torch.all((mask == 0) | torch.isclose(mask, torch.tensor(1 / rounded)))
    assert mask.double().mean().item() == pytest.approx(1.0, abs=5 * sigma / rounded)


def test_neighbouring_elements_are_independent():
    # The 16-bit lanes of one 64-bit draw decide neighbouring elements: they must not agree
    # more often than chance.
    torch.manual_seed(1)
    kept = (keep_masks((4_000_000,), 0.5, CPU) > 0).double()
    both = (kept[:-1] * kept[1:]).mean().item()
    assert both == pytest.approx(0.25, abs=5 * (0.25 * 0.75 / kept.numel()) ** 0.5)


def test_torch_seed_decides_the_masks_and_they_advance_its_generator():
    torch.manual_seed(42)
    first, second = keep_masks((64, 64), 0.75, CPU), keep_masks((64, 64), 0.75, CPU)
    assert not torch.equal(first, second)
    torch.manual_seed(42)
    assert torch.equal(keep_masks((64, 64), 0.75, CPU), first)
    # A restored generator state (what a checkpoint keeps) gives the mask that follows it.
    state = torch.get_rng_state()
    expected = keep_masks((64, 64), 0.75, CPU)
    torch.set_rng_state(state)
    assert torch.equal(keep_masks((64, 64), 0.75, CPU), expected)


def test_dropout_module_is_nn_dropout_in_every_other_respect():
    layer = Dropout(0.25)
    x = torch.randn(128, 32)
    assert torch.equal(layer.eval()(x), x)
    layer.train()
    out = layer(x)
    scale = out / x
    assert torch.all((scale == 0) | torch.isclose(scale, torch.tensor(1 / 0.75)))
    assert layer.state_dict() == {} and "p=0.25" in repr(layer)
    state = torch.get_rng_state()
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(torch.get_rng_state(), state), "p = 0 must draw nothing"
    with pytest.raises(ValueError):
        keep_masks((2,), 0.0, CPU)


@pytest.mark.parametrize("linear_base_is_x0", [False, True])
@pytest.mark.parametrize("with_mask", [False, True])
def test_cross_tail_backward_is_the_chain_rule(linear_base_is_x0, with_mask):
    torch.manual_seed(0)
    batch, half = 5, 3
    double = {"dtype": torch.float64, "requires_grad": True}
    h = torch.randn(2, batch, half, **double)
    x = torch.randn(2, batch, 2 * half, **double)
    x0 = torch.randn(batch, 2 * half, **double)
    gamma, beta = torch.randn(2, 1, half, **double), torch.randn(2, 1, half, **double)
    bias = torch.rand(2, 1, 2 * half, **double)
    mask = (torch.rand(2, batch, 2 * half, dtype=torch.float64) > 0.3).double() / 0.7 if with_mask else None

    def tail(h, x, x0, gamma, beta, bias):
        return CrossTail.apply(h, x, x0, gamma, beta, bias, mask, linear_base_is_x0, 1e-5)

    # fast_mode: random projections of the Jacobians (seconds faster, still fails on a wrong term)
    assert torch.autograd.gradcheck(tail, (h, x, x0, gamma, beta, bias), fast_mode=True)
