"""The gated DCNv3 click-through-rate model of the researcher's report.

Two branches read the same field embeddings:
  - DCNv3: an Exponential and a Linear Cross Network, their logits averaged;
  - deep:  a plain MLP.
A learned per-sample gate mixes them:  g = sigmoid(gate_net(e)),
    logit = g * z_dcnv3 + (1 - g) * z_deep.
"Gate mean" in the report is E[g] on validation data; "gate range" is [min g, max g].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from dcnprobe.model.layers import MLP, CrossNetwork, FusedEmbedding, mlps_on_one_input, paired_cross
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    # Small enough that an epoch of the report's 514 x 4096 rows takes about a minute on
    # 2 CPU cores; the report does not give its sizes. FuxiCTR's DCNv3 defaults use 16.
    embedding_dim: int = 8
    # Per cross network; the DCNv3 paper reports 2-4 layers per network as enough for
    # the orders of interaction that matter on Criteo.
    cross_layers: int = 3
    deep_layers: tuple[int, ...] = (256, 128)  # a common CTR deep tower (DCN-V2's Criteo set-up uses wider ones)
    gate_hidden: int = 32  # the gate only has to learn a per-sample mixing weight
    dropout: float = 0.25  # the phase3-revised preset's value; each preset sets its own (model/presets.py)
    # Tri-BCE (DCNv3 paper): each cross network's logit also gets its own BCE, weighted
    # by how much worse it is than the mixed prediction, so neither branch goes idle.
    tri_bce: bool = False
    # Small initial weights keep the exponential cross network's products near 1 at the
    # start: with unit-variance weights its activations grow by a power per layer.
    init_std: float = 0.05
    # False: the published DCNv3 alone (the two cross networks' logits averaged, no deep
    # branch, no gate), the architecture of FuxiCTR's DCNv3 that the reference benchmark
    # compares the trainer's step with. Its output reports a gate of 1 (all DCNv3).
    gated: bool = True


class ModelOutput(NamedTuple):
    logit: torch.Tensor  # [B] the mixed prediction, pre-sigmoid
    gate: torch.Tensor  # [B] weight of the DCNv3 branch
    ecn: torch.Tensor  # [B] exponential cross network logit
    lcn: torch.Tensor  # [B] linear cross network logit
    deep: torch.Tensor  # [B] deep branch logit


class GatedDCNv3(nn.Module):
    def __init__(self, config: ModelConfig, vocab_sizes: tuple[int, ...], num_numeric: int) -> None:
        super().__init__()
        self.config = config
        self.embedding = FusedEmbedding(vocab_sizes, num_numeric, config.embedding_dim, config.init_std)
        width = self.embedding.num_fields * config.embedding_dim
        self.ecn = CrossNetwork(width, config.cross_layers, config.dropout, kind="exponential")
        self.lcn = CrossNetwork(width, config.cross_layers, config.dropout, kind="linear")
        # Built last, so that the layers both architectures share draw the same initial
        # numbers from the same seed.
        self.deep = MLP(width, config.deep_layers, config.dropout) if config.gated else None
        self.gate = MLP(width, (config.gate_hidden,), dropout=0.0) if config.gated else None

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> ModelOutput:
        e = self.embedding(categorical, numeric).flatten(1)
        z_ecn, z_lcn = paired_cross(self.ecn, self.lcn, e)
        z_dcnv3 = 0.5 * (z_ecn + z_lcn)
        if self.deep is None:
            return ModelOutput(z_dcnv3, torch.ones_like(z_dcnv3), z_ecn, z_lcn, torch.zeros_like(z_dcnv3))
        z_deep, z_gate = (z.squeeze(-1) for z in mlps_on_one_input(e, self.deep, self.gate))
        g = torch.sigmoid(z_gate)
        return ModelOutput(g * z_dcnv3 + (1 - g) * z_deep, g, z_ecn, z_lcn, z_deep)


def smooth_labels(labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Pull 0/1 targets towards 0.5 by `smoothing`."""
    return labels * (1.0 - smoothing) + 0.5 * smoothing if smoothing else labels


def training_loss(out: ModelOutput, labels: torch.Tensor, smoothing: float, tri_bce: bool) -> torch.Tensor:
    target = smooth_labels(labels, smoothing)
    if not tri_bce:
        return F.binary_cross_entropy_with_logits(out.logit, target)
    # The three BCE terms (mixed, ECN, LCN) in one pass over a [3, B] stack.
    logits = torch.stack([out.logit, out.ecn, out.lcn])
    terms = F.binary_cross_entropy_with_logits(logits, target.expand_as(logits), reduction="none").mean(dim=1)
    loss = terms[0]
    for aux in (terms[1], terms[2]):
        # Weight = how much worse the branch is than the whole: zero once it catches up.
        # As from the start, the LCN's weight is measured against the loss that already
        # includes the ECN's term (FuxiCTR weighs both against the mixed loss alone).
        loss = loss + aux * torch.clamp(aux - loss, min=0.0)
    return loss
