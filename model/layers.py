"""Building blocks of the gated DCNv3: one fused embedding table, cross networks, an MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
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
        self.dropout = nn.Dropout(dropout)
        self.logit = nn.Linear(dim, 1)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for weight, norm, bias in zip(self.weights, self.norms, self.biases):
            h = weight(x)
            c = torch.cat([h, h * torch.relu(norm(h))], dim=-1)
            base = x0 if self.kind == "linear" else x
            x = self.dropout(base * (c + bias) + x)
        return self.logit(x).squeeze(-1)


class MLP(nn.Module):
    """Linear -> ReLU -> Dropout blocks, then a linear output of width `out`."""

    def __init__(self, dim: int, hidden: Sequence[int], dropout: float, out: int = 1) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for width in hidden:
            blocks += [nn.Linear(dim, width), nn.ReLU(), nn.Dropout(dropout)]
            dim = width
        blocks.append(nn.Linear(dim, out))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
