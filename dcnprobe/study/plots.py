"""The study's plots: a metric per epoch per preset, the mean over seeds as a line and
the seeds' spread (lowest to highest) as a band. matplotlib without a display (Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dcnprobe.study.summary import PresetSummary  # noqa: E402


def per_epoch(presets: Sequence[PresetSummary], metric: str, ylabel: str, title: str, path: Path,
              target: float | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for summary in presets:
        epochs = [values for values in summary.per_epoch[metric] if values]
        if not epochs:
            continue
        x = np.arange(1, len(epochs) + 1)
        mean = np.array([np.mean(v) for v in epochs])
        line = ax.plot(x, mean, marker="o", label=f"{summary.preset} (n={len(summary.seeds)})")[0]
        ax.fill_between(x, [min(v) for v in epochs], [max(v) for v in epochs], color=line.get_color(), alpha=0.18,
                        linewidth=0)
    if target is not None:
        ax.axhline(target, color="#59636e", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
