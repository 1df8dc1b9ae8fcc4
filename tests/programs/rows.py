"""The rows the framework test programs train on, served one at a time, with the planted
worker fault they share. Knows nothing of dcnprobe; the programs import it from their own
folder, as they do ground_truth.py.

    --fault worker-history   each DataLoader worker checks every new row against the whole
                             history it has served (field by field): with persistent
                             workers the history, and the work per row, grow every epoch.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, get_worker_info

FEATURES = 32
KEY_FIELDS = 12


class Rows(Dataset):
    def __init__(self, rows: int, seed: int, fault: str | None) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(rows, FEATURES, generator=generator)
        self.y = (self.x[:, :1] - self.x[:, 1:2] > 0).float()
        self.fault = fault
        self.history: list[list[float]] = []  # per worker process

    def __len__(self) -> int:
        return len(self.x)

    def row(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[index]
        if self.fault == "worker-history" and get_worker_info() is not None:
            key = x[:KEY_FIELDS].tolist()
            for field, value in enumerate(key):
                sum(1 for seen in self.history if seen[field] == value)
            self.history.append(key)
        return x, self.y[index]

    def __getitem__(self, index: int):
        return self.row(index)
