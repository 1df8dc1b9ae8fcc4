"""The steady batches: each epoch's batches after its warm-up, read from the run's batch
table without copying it.

A million batches are about 85 MB in Run.batches's compact columns. Selecting the steady
rows copied all of it, and each groupby over epochs copied it again (sorted), which was
most of what analysing a long run cost in memory. Here an epoch's batches, and its steady
ones, are row slices of the table (views), and a column over the whole run is selected
when asked for (one column's copy at a time).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from dcnprobe.ratios import warmup_batches


def epoch_spans(batches: pd.DataFrame) -> list[tuple[int, int, int]] | None:
    """(epoch, first row, row after the last) for each epoch, in order, when every epoch's
    batches are one run of rows in epoch order (as the probe writes them); otherwise None."""
    if batches.empty:
        return []
    epochs = batches["epoch"].to_numpy()
    if (np.diff(epochs) < 0).any():
        return None
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(epochs)) + 1, [len(epochs)]])
    return [(int(epochs[start]), int(start), int(stop)) for start, stop in zip(bounds[:-1], bounds[1:])]


def epoch_groups(batches: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Each epoch's batches: row slices of `batches` where they are runs of rows in order,
    else (a record whose epochs interleave) a groupby's copies."""
    spans = epoch_spans(batches)
    if spans is None:
        return {int(e): g for e, g in batches.groupby("epoch", sort=True)}
    return {epoch: batches.iloc[start:stop] for epoch, start, stop in spans}


def steady_batches(batches: pd.DataFrame) -> pd.DataFrame:
    """Batches after each epoch's warm-up, as one table of their own (a copy)."""
    if batches.empty:
        return batches
    epochs = batches["epoch"].to_numpy()
    keep = np.ones(len(batches), dtype=bool)
    for epoch in np.unique(epochs):
        rows = np.flatnonzero(epochs == epoch)
        keep[rows[:warmup_batches(len(rows))]] = False
    # One boolean selection (a single copy), in epoch order as before.
    steady = batches[keep]
    return steady if steady["epoch"].is_monotonic_increasing else steady.sort_values("epoch", kind="stable")


class SteadyBatches:
    """The steady batches of a run: what steady_batches(batches) holds, read without a copy
    of the table where each epoch's batches are one run of rows (always, as the probe
    writes them); otherwise from that copy.

    `steady["total"]` is a column over every steady batch, in epoch order (a Series of its
    own, numbered from 0); `steady.epochs()` gives each epoch's steady rows as a table
    slice; `steady.row(i)` is the i-th steady batch."""

    def __init__(self, batches: pd.DataFrame) -> None:
        spans = epoch_spans(batches)
        if spans is None:  # epochs interleave: the copy, sorted by epoch, is all steady
            self.frame = steady_batches(batches)
            spans = epoch_spans(self.frame)
            self._keep = None
        else:
            self.frame = batches
            spans = [(epoch, start + warmup_batches(stop - start), stop) for epoch, start, stop in spans]
            self._keep = np.zeros(len(batches), dtype=bool)  # the steady rows of the table
            for _, start, stop in spans:
                self._keep[start:stop] = True
        self.spans = [(epoch, start, stop) for epoch, start, stop in spans if stop > start]
        self.size = sum(stop - start for _, start, stop in self.spans)

    @property
    def empty(self) -> bool:
        return self.size == 0

    def __len__(self) -> int:
        return self.size

    def __contains__(self, name: str) -> bool:
        return name in self.frame

    def __getitem__(self, name: str) -> pd.Series:
        values = self.frame[name].to_numpy()
        return pd.Series(values if self._keep is None else values[self._keep], name=name, copy=False)

    def epochs(self) -> Iterator[tuple[int, pd.DataFrame]]:
        """Each epoch's steady batches, in epoch order."""
        for epoch, start, stop in self.spans:
            yield epoch, self.frame.iloc[start:stop]

    def row(self, i: int) -> pd.Series:
        return self.frame.iloc[i if self._keep is None else int(np.flatnonzero(self._keep)[i])]
