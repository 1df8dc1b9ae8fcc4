import pytest
import torch
from dcnprobe.model.gated_dcnv3 import GatedDCNv3, ModelConfig, training_loss
from dcnprobe.model.layers import CrossNetwork

VOCAB = (5, 7, 11)


def make_model(**changes):
    torch.manual_seed(0)
    return GatedDCNv3(ModelConfig(**changes), VOCAB, num_numeric=2)


def batch(n=64):
    g = torch.Generator().manual_seed(1)
    cat = torch.stack([torch.randint(0, v, (n,), generator=g) for v in VOCAB], dim=1).int()
    return cat, torch.randn(n, 2, generator=g), (torch.rand(n, generator=g) < 0.3).float()


def test_shapes_and_gate_inside_unit_interval():
    model = make_model()
    cat, num, _ = batch()
    out = model(cat, num)
    for tensor in out:
        assert tensor.shape == (64,)
    assert torch.all(out.gate > 0) and torch.all(out.gate < 1)


def test_logit_is_the_gated_mix_of_branches():
    model = make_model().eval()
    out = model(*batch()[:2])
    mixed = out.gate * 0.5 * (out.ecn + out.lcn) + (1 - out.gate) * out.deep
    torch.testing.assert_close(out.logit, mixed)


@pytest.mark.parametrize("kind", ["linear", "exponential"])
def test_cross_layer_follows_the_published_update(kind):
    torch.manual_seed(0)
    net = CrossNetwork(dim=6, layers=1, dropout=0.0, kind=kind).eval()
    x0 = torch.randn(4, 6)
    h = x0 @ net.weights[0].weight.T
    mask = torch.relu(torch.nn.functional.layer_norm(h, (3,), net.norms[0].weight, net.norms[0].bias))
    c = torch.cat([h, h * mask], dim=-1)
    # With one layer x_l == x_0, so both kinds give x0 * (c + b) + x0.
    x1 = x0 * (c + net.biases[0]) + x0
    expected = x1 @ net.logit.weight.T.squeeze(-1) + net.logit.bias
    torch.testing.assert_close(net(x0), expected)


def test_linear_and_exponential_differ_after_two_layers():
    torch.manual_seed(0)
    lin = CrossNetwork(6, 2, 0.0, "linear").eval()
    exp = CrossNetwork(6, 2, 0.0, "exponential").eval()
    exp.load_state_dict(lin.state_dict())
    x0 = torch.randn(4, 6)
    assert not torch.allclose(lin(x0), exp(x0))


def test_tri_bce_adds_nonnegative_auxiliary_terms():
    model = make_model()
    cat, num, y = batch()
    out = model(cat, num)
    plain = training_loss(out, y, smoothing=0.0, tri_bce=False)
    tri = training_loss(out, y, smoothing=0.0, tri_bce=True)
    assert tri >= plain


def test_label_smoothing_changes_the_target():
    model = make_model()
    cat, num, y = batch()
    out = model(cat, num)
    assert training_loss(out, y, 0.1, False) != training_loss(out, y, 0.0, False)


def test_eval_mode_is_deterministic_and_train_mode_uses_dropout():
    model = make_model(dropout=0.5)
    cat, num, _ = batch()
    model.eval()
    torch.testing.assert_close(model(cat, num).logit, model(cat, num).logit)
    model.train()
    assert not torch.allclose(model(cat, num).logit, model(cat, num).logit)
