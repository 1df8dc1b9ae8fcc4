import pytest
import torch
import torch.nn.functional as F
from dcnprobe.model.gated_dcnv3 import GatedDCNv3, ModelConfig, training_loss
from dcnprobe.model.layers import MLP, CrossNetwork, mlps_on_one_input, paired_cross

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


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_paired_cross_is_the_two_networks_run_one_after_the_other(train):
    # The step runs both cross networks together; its values, its gradients and (in
    # training) its dropout masks must be those of running ecn and then lcn.
    torch.manual_seed(0)
    ecn = CrossNetwork(12, 3, 0.3, "exponential").train(train)
    lcn = CrossNetwork(12, 3, 0.3, "linear").train(train)
    params = [*ecn.parameters(), *lcn.parameters()]
    x0 = torch.randn(32, 12, requires_grad=True)
    torch.manual_seed(7)
    separate = (ecn(x0), lcn(x0))
    expected_grads = torch.autograd.grad(separate[0].sum() + 2 * separate[1].sum(), [x0, *params])
    torch.manual_seed(7)
    paired = paired_cross(ecn, lcn, x0)
    grads = torch.autograd.grad(paired[0].sum() + 2 * paired[1].sum(), [x0, *params])
    for got, want in zip(paired, separate):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_paired_cross_draws_what_dropout_draws():
    # Same masks or not: with other masks the outputs differ by far more than rounding.
    torch.manual_seed(0)
    ecn, lcn = CrossNetwork(12, 2, 0.5, "exponential"), CrossNetwork(12, 2, 0.5, "linear")
    x0 = torch.randn(32, 12)
    torch.manual_seed(3)
    separate = torch.stack([ecn(x0), lcn(x0)])
    after = torch.rand(1)
    torch.manual_seed(3)
    paired = torch.stack(paired_cross(ecn, lcn, x0))
    torch.testing.assert_close(paired, separate, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.rand(1), after), "the generator must end where the separate networks leave it"


def test_paired_cross_refuses_networks_it_cannot_pair():
    lin = CrossNetwork(6, 2, 0.0, "linear")
    with pytest.raises(ValueError, match="exponential and a linear"):
        paired_cross(lin, lin, torch.randn(2, 6))


def test_one_pass_tri_bce_is_the_three_terms_added_in_turn():
    model = make_model(tri_bce=True)
    cat, num, y = batch()
    out = model(cat, num)
    target = y * 0.9 + 0.05
    loss = F.binary_cross_entropy_with_logits(out.logit, target)
    for aux_logit in (out.ecn, out.lcn):  # the formulation before the one-pass loss
        aux = F.binary_cross_entropy_with_logits(aux_logit, target)
        loss = loss + aux * torch.clamp(aux - loss, min=0.0)
    torch.testing.assert_close(training_loss(out, y, smoothing=0.1, tri_bce=True), loss)


def test_ungated_model_is_the_published_dcnv3_with_the_same_initial_cross_layers():
    gated, plain = make_model(), make_model(gated=False)
    assert plain.deep is None and plain.gate is None
    shared = {k: v for k, v in gated.state_dict().items() if k.startswith(("embedding", "ecn", "lcn"))}
    for key, value in plain.state_dict().items():
        assert torch.equal(value, shared[key]), key
    out = plain.eval()(*batch()[:2])
    torch.testing.assert_close(out.logit, 0.5 * (out.ecn + out.lcn))
    assert torch.all(out.gate == 1)


def test_mlps_on_one_input_is_each_mlp_in_turn():
    torch.manual_seed(0)
    deep, gate = MLP(10, (16, 8), dropout=0.4), MLP(10, (4,), dropout=0.0)
    x = torch.randn(32, 10)
    torch.manual_seed(5)
    separate = [deep(x), gate(x)]
    torch.manual_seed(5)
    together = mlps_on_one_input(x, deep, gate)
    for got, want in zip(together, separate):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="hidden layer"):
        mlps_on_one_input(x, MLP(10, (), dropout=0.0))
