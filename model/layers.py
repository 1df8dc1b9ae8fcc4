"""Building blocks of the gated DCNv3: one fused embedding table, cross networks, an MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from dcnprobe.model.cross_step import CrossTail
from dcnprobe.model.dropout import Dropout, fill_keep_mask_
from torch import nn


class FusedEmbedding(nn.Module):
    """All categorical fields share one table (row offsets per field); numeric fields are
    projected to the same dimension by a learned vector per field (x_i * v_i).

    One table means one embedding lookup and one optimizer tensor per step, instead of
    one per field.
    """

    def __init__(self, vocab_sizes: Sequence[int], num_numeric: int, dim: int, init_std: float) -> None:
        super().__init__()
        offsets = torch.tensor([0, *list(vocab_sizes)[:-1]], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        self.table = nn.Embedding(int(sum(vocab_sizes)), dim)
        self.numeric = nn.Parameter(torch.empty(num_numeric, dim))
        nn.init.normal_(self.table.weight, std=init_std)
        nn.init.normal_(self.numeric, std=init_std)

    @property
    def num_fields(self) -> int:
        return self.offsets.numel() + self.numeric.shape[0]

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        """[B, C] ids and [B, N] values -> [B, C + N, dim]."""
        cat = self.table(categorical + self.offsets)
        num = numeric.unsqueeze(-1) * self.numeric
        return torch.cat([cat, num], dim=1)


class CrossNetwork(nn.Module):
    """DCNv3's cross network with self-mask (Li et al., arXiv 2407.13349).

    Per layer l:  h = W_l x_l  (W_l is D/2 x D, no bias)
                  m = ReLU(LayerNorm(h))       the self-mask keeps informative halves
                  c = [h, h * m]               back to D dimensions
      linear:      x_{l+1} = x_0 * (c + b_l) + x_l   (order grows by one per layer)
      exponential: x_{l+1} = x_l * (c + b_l) + x_l   (order doubles per layer)
    with dropout after each layer, and a linear logit at the end.
    """

    def __init__(self, dim: int, layers: int, dropout: float, kind: str) -> None:
        super().__init__()
        if kind not in ("linear", "exponential"):
            raise ValueError(f"kind must be 'linear' or 'exponential', not {kind!r}")
        if dim % 2:
            raise ValueError(f"cross networks need an even input width, got {dim}")
        self.kind = kind
        self.weights = nn.ModuleList(nn.Linear(dim, dim // 2, bias=False) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim // 2) for _ in range(layers))
        # Uniform(0, 1) biases as in the published code: (c + b) starts positive.
        self.biases = nn.ParameterList(nn.Parameter(torch.rand(dim)) for _ in range(layers))
        self.dropout = Dropout(dropout)
        self.logit = nn.Linear(dim, 1)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for weight, norm, bias in zip(self.weights, self.norms, self.biases):
            h = weight(x)
            c = torch.cat([h, h * torch.relu(norm(h))], dim=-1)
            base = x0 if self.kind == "linear" else x
            x = self.dropout(base * (c + bias) + x)
        return self.logit(x).squeeze(-1)


def paired_cross(ecn: CrossNetwork, lcn: CrossNetwork, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ecn(x0), lcn(x0)) with the two networks' layers computed together: their inputs
    stacked as [2, B, D], one batched matmul per layer for both weights, and every
    elementwise op once for both, which halves the ops a step runs (and their backward).

    The maths is CrossNetwork.forward's. Dropout draws the same random numbers in the
    same order as running ecn and then lcn would (each network's layers in turn, one
    keep-mask each, model.dropout), so a seed gives the same masks; sums may run in
    another order (bmm, layer norm's affine applied after), which moves results in the
    last bits only.
    """
    layers = len(ecn.weights)
    if ecn.kind != "exponential" or lcn.kind != "linear" or len(lcn.weights) != layers:
        raise ValueError("paired_cross takes an exponential and a linear network of equal depth")
    masks = _dropout_masks(ecn.dropout, lcn.dropout, layers, x0)
    x = x0.unsqueeze(0).expand(2, *x0.shape)
    for layer in range(layers):
        weight = torch.stack([ecn.weights[layer].weight, lcn.weights[layer].weight])  # [2, D/2, D]
        h = torch.bmm(x, weight.transpose(1, 2))  # [2, B, D/2]
        norm_e, norm_l = ecn.norms[layer], lcn.norms[layer]
        gamma = torch.stack([norm_e.weight, norm_l.weight]).unsqueeze(1)
        beta = torch.stack([norm_e.bias, norm_l.bias]).unsqueeze(1)
        bias = torch.stack([ecn.biases[layer], lcn.biases[layer]]).unsqueeze(1)
        # exponential: x_l * (c + b) + x_l;  linear: x_0 * (c + b) + x_l
        x = CrossTail.apply(h, x, x0, gamma, beta, bias, None if masks is None else masks[layer],
                            layer > 0, norm_e.eps)
    weight = torch.stack([ecn.logit.weight, lcn.logit.weight]).transpose(1, 2)  # [2, D, 1]
    bias = torch.stack([ecn.logit.bias, lcn.logit.bias]).unsqueeze(1)  # [2, 1, 1]
    logits = torch.baddbmm(bias, x, weight).squeeze(-1)
    return logits[0], logits[1]


def _dropout_masks(first: nn.Dropout, second: nn.Dropout, layers: int, like: torch.Tensor) -> torch.Tensor | None:
    """[layers, 2, B, D] scaled keep-masks, drawn first network first, layer by layer, as
    the two networks' own dropout calls would draw them; None when dropout is off."""
    if not first.training or (first.p == 0 and second.p == 0):
        return None
    masks = like.new_empty(layers, 2, *like.shape)
    for net, p in enumerate((first.p, second.p)):
        for layer in range(layers):
            fill_keep_mask_(masks[layer, net], 1.0 - p)  # p = 0 draws nothing, as dropout(p=0)
    return masks


class MLP(nn.Module):
    """Linear -> ReLU -> Dropout blocks, then a linear output of width `out`."""

    def __init__(self, dim: int, hidden: Sequence[int], dropout: float, out: int = 1) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for width in hidden:
            blocks += [nn.Linear(dim, width), nn.ReLU(), Dropout(dropout)]
            dim = width
        blocks.append(nn.Linear(dim, out))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mlps_on_one_input(x: torch.Tensor, *mlps: MLP) -> list[torch.Tensor]:
    """[mlp(x) for mlp in mlps], with their first Linear layers as one matmul (their
    weights concatenated) and one ReLU; each MLP's remaining blocks then run on its slice.
    The same maths (sums may run in another order), and the same dropout draws in the
    same order, as calling the MLPs one after the other."""
    firsts = [mlp.net[0] for mlp in mlps]
    if any(len(mlp.net) < 2 or not isinstance(mlp.net[1], nn.ReLU) for mlp in mlps):
        raise ValueError("mlps_on_one_input needs MLPs with a hidden layer (Linear, ReLU, ...)")
    weight = torch.cat([first.weight for first in firsts])
    bias = torch.cat([first.bias for first in firsts])
    hidden = torch.relu(F.linear(x, weight, bias))
    slices = hidden.split([first.out_features for first in firsts], dim=-1)
    return [mlp.net[2:](part) for mlp, part in zip(mlps, slices)]
