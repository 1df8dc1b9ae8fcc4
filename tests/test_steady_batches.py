"""SteadyBatches: the steady batches that steady_batches() copies out of a run's table, read
as views of it instead: the same rows, columns and epochs, and no copy where each epoch's
batches are one run of rows (as the probe writes them)."""

import numpy as np
import pandas as pd
import pytest

from dcnprobe.analysis.signals import SteadyBatches, steady_batches
from dcnprobe.analysis.signals.steady import epoch_groups


def table(epochs):
    """Batches of the given epochs, in that order, in compact columns as read_run gives them."""
    rng = np.random.default_rng(0)
    n = len(epochs)
    return pd.DataFrame({"epoch": np.asarray(epochs, dtype=np.int32), "step": np.arange(n, dtype=np.int32),
                         "t": np.cumsum(rng.random(n)), "total": rng.random(n).astype(np.float32)}, copy=False)


def same_as_the_copy(batches):
    steady, copy = SteadyBatches(batches), steady_batches(batches)
    assert len(steady) == len(copy) and steady.empty == copy.empty
    for name in batches:
        assert steady[name].tolist() == copy[name].tolist()
    grouped = {int(e): g for e, g in copy.groupby("epoch", sort=True)}
    assert [e for e, _ in steady.epochs()] == list(grouped)
    for epoch, group in steady.epochs():
        pd.testing.assert_frame_equal(group.reset_index(drop=True), grouped[epoch].reset_index(drop=True))
    for i in sorted({0, len(copy) // 2, len(copy) - 1}) if len(copy) else ():
        assert steady.row(i).tolist() == copy.iloc[i].tolist()
    return steady


def test_epochs_in_runs_of_rows_are_read_without_a_copy():
    batches = table([1] * 5 + [2] * 30 + [3] * 200)  # no warm-up dropped from 5, 2 from 30, 10 from 200
    steady = same_as_the_copy(batches)
    assert len(steady) == 5 + 28 + 190
    for name in batches:
        column = batches[name].to_numpy()
        assert all(np.shares_memory(group[name].to_numpy(), column) for _, group in steady.epochs())
        assert all(np.shares_memory(group[name].to_numpy(), column) for group in epoch_groups(batches).values())


def test_epochs_that_interleave_are_read_from_the_copy():
    same_as_the_copy(table([1, 2] * 40 + [1] * 10))


@pytest.mark.parametrize("epochs", [[], [4] * 12])
def test_no_batches_and_one_epoch(epochs):
    same_as_the_copy(table(epochs))
