"""The plots of a comparison report: per-batch time by epoch, memory timelines and the
phase breakdown, one panel per trial. matplotlib without a display (Agg)."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dcnprobe.hooks import DATA_WAIT, PHASES  # noqa: E402
from dcnprobe.runs import Run  # noqa: E402

MB = 1 << 20
_PHASE_COLOURS = dict(zip((DATA_WAIT, *PHASES, "other"),
                          ("#d62728", "#9467bd", "#1f77b4", "#ff7f0e", "#2ca02c", "#8c564b", "#7f7f7f")))


@dataclass
class Panel:
    title: str
    run: Run

    @property
    def wrapped(self) -> str:
        return textwrap.fill(self.title, 48)


def _grid(count: int, width: float = 4.2, height: float = 2.6):
    cols = min(3, max(1, count))
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(8.0, width * cols), height * rows + 0.8), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def batch_times(panels: Sequence[Panel], path: Path) -> Path:
    """Batch time against step, one colour per epoch, each epoch's median as a line."""
    fig, axes = _grid(len(panels))
    for ax, panel in zip(axes, panels):
        batches = panel.run.batches
        if batches.empty:
            ax.text(0.5, 0.5, "no batches recorded", ha="center", transform=ax.transAxes)
        for epoch, group in batches.groupby("epoch") if not batches.empty else []:
            line = ax.plot(group["step"], group["total"] * 1000, ".", ms=2.5, label=f"epoch {epoch}")[0]
            median = group["total"].median() * 1000
            ax.hlines(median, group["step"].min(), group["step"].max(), colors=line.get_color(), linewidth=1.5)
        _label(ax, panel, "batch (all epochs)", "batch time, ms")
        if not batches.empty:
            top = np.percentile(batches["total"], 99) * 1000 * 1.3
            ax.set_ylim(0, max(top, 1))
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Per-batch time by epoch (lines: epoch medians)", fontsize=11)
    return _save(fig, path)


def memory_timelines(panels: Sequence[Panel], path: Path) -> Path:
    fig, axes = _grid(len(panels))
    for ax, panel in zip(axes, panels):
        memory = panel.run.samples
        if memory.empty:
            ax.text(0.5, 0.5, "no memory samples", ha="center", transform=ax.transAxes)
        else:
            t = memory["t"]
            series = [("main RSS", "main_rss"), ("main in use (glibc)", "malloc_in_use"), ("workers RSS", "workers_rss"),
                      ("workers USS", "workers_uss"), ("device allocated", "device_allocated"),
                      ("device current", "device_current"), ("device driver", "device_driver"), ("swap used", "swap_used")]
            for label, column in series:
                if column in memory and memory[column].notna().any() and memory[column].max() > 0:
                    values = memory[column]
                    mask = values.notna()
                    ax.plot(t[mask], values[mask] / MB, label=label, linewidth=1.2)
            ax.legend(fontsize=6, loc="upper left")
        _label(ax, panel, "seconds", "MB")
    fig.suptitle("Memory: main process, DataLoader workers, device, swap", fontsize=11)
    return _save(fig, path)


def phase_breakdown(panels: Sequence[Panel], path: Path) -> Path:
    """Stacked median seconds per phase, per epoch, per trial."""
    fig, axes = _grid(len(panels), height=2.4)
    phases = (DATA_WAIT, *PHASES, "other")
    for ax, panel in zip(axes, panels):
        batches = panel.run.batches
        if batches.empty:
            ax.set_visible(False)
            continue
        medians = batches.groupby("epoch")[[p for p in phases if p in batches]].median() * 1000
        bottom = np.zeros(len(medians))
        for phase in medians.columns:
            ax.bar([f"epoch {e}" for e in medians.index], medians[phase], bottom=bottom, label=phase,
                   color=_PHASE_COLOURS.get(phase))
            bottom += medians[phase].to_numpy()
        _label(ax, panel, None, "median ms per batch")
    if axes:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7)
    fig.suptitle("Where each batch's time goes, per epoch", fontsize=11)
    fig.subplots_adjust(bottom=0.15)
    return _save(fig, path)


def _label(ax, panel: Panel, xlabel: str | None, ylabel: str) -> None:
    ax.set_title(panel.wrapped, fontsize=8)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
