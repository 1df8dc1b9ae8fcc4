"""Statistics on synthetic series with known answers."""

import numpy as np
import pytest

from dcnprobe.analysis.stats import change_point, linear_slope, mad_outliers, periodic_bursts
from dcnprobe.ratios import percentile, ratio_ci, summarize, warmup_batches


def noisy(n, level, seed, spread=0.02):
    return level * (1 + spread * np.random.default_rng(seed).standard_normal(n))


def test_summary():
    s = summarize(np.arange(1.0, 11.0))
    assert (s.n, s.median, s.max, s.mean) == (10, 5.5, 10.0, 5.5)
    assert s.p90 == pytest.approx(9.1)
    assert summarize(np.array([])).n == 0


def test_warmup_is_bounded():
    assert warmup_batches(5) == 0
    assert warmup_batches(40) == 2
    assert warmup_batches(200) == 10
    assert warmup_batches(5000) == 10


def test_ratio_ci_covers_a_known_slowdown_and_excludes_one():
    base = noisy(200, 0.10, 1)
    slow = noisy(200, 0.15, 2)
    ratio, low, high = ratio_ci(base, slow)
    assert ratio == pytest.approx(1.5, rel=0.02)
    assert low < 1.5 < high and low > 1.4
    same = ratio_ci(base, noisy(200, 0.10, 3))
    assert same[1] < 1.0 < same[2]


def test_ratio_ci_is_deterministic_and_narrows_with_more_data():
    a, b = noisy(50, 1.0, 4, 0.2), noisy(50, 1.2, 5, 0.2)
    assert ratio_ci(a, b) == ratio_ci(a, b)
    wide = ratio_ci(a, b)
    narrow = ratio_ci(noisy(800, 1.0, 4, 0.2), noisy(800, 1.2, 5, 0.2))
    assert narrow[2] - narrow[1] < wide[2] - wide[1]


def test_linear_slope_recovers_the_slope():
    x = np.arange(100.0)
    y = 3.0 + 0.5 * x + np.random.default_rng(0).standard_normal(100) * 0.1
    slope = linear_slope(x, y)
    assert slope.per_step == pytest.approx(0.5, abs=0.01)
    assert slope.growth == pytest.approx(0.5 * 99, rel=0.01)
    assert slope.t > 100 and slope.r2 > 0.99
    flat = linear_slope(x, np.random.default_rng(1).standard_normal(100))
    assert abs(flat.t) < 3


def test_linear_slope_ignores_missing_values():
    x = np.arange(10.0)
    y = 2 * x
    y[3] = np.nan
    assert linear_slope(x, y).per_step == pytest.approx(2.0)


def test_change_point_finds_a_step():
    y = np.concatenate([noisy(120, 0.1, 6), noisy(80, 0.3, 7)])
    found = change_point(y)
    assert found is not None and found.kind == "step"
    assert abs(found.index - 120) <= 2


def test_change_point_finds_where_a_ramp_starts():
    flat = noisy(100, 0.1, 8, 0.01)
    ramp = 0.1 + 0.002 * np.arange(1, 101) + 0.001 * np.random.default_rng(9).standard_normal(100)
    found = change_point(np.concatenate([flat, ramp]))
    assert found is not None and found.kind == "ramp"
    assert abs(found.index - 100) <= 5


def test_no_change_point_in_noise():
    assert change_point(noisy(300, 0.1, 10, 0.05)) is None
    assert change_point(np.full(50, 0.2)) is None


def test_change_point_fitted_in_chunks_is_the_one_fitted_at_once(monkeypatch):
    """The candidates are fitted FIT_CHUNK positions at a time (memory); chunks of 7 (the
    boundaries everywhere, ties across them) find what one chunk of everything finds."""
    from dcnprobe.analysis import stats

    rng = np.random.default_rng(3)
    series = []
    for n in (10, 11, 50, 1001):
        series += [rng.random(n), np.r_[np.ones(n // 2), 1.5 * np.ones(n - n // 2)],
                   np.r_[np.ones(n // 3), 1 + 0.01 * np.arange(n - n // 3)],
                   np.ones(n) + 1e-9 * (np.arange(n) % 2), np.r_[np.ones(n - 3), [5.0, 5.0, 5.0]]]
    monkeypatch.setattr(stats, "FIT_CHUNK", 1 << 20)
    whole = [change_point(y) for y in series]
    assert sum(found is not None for found in whole) >= 8
    monkeypatch.setattr(stats, "FIT_CHUNK", 7)
    assert [change_point(y) for y in series] == whole


def test_linear_slope_in_place_is_the_plain_least_squares():
    """linear_slope reuses its working arrays (8 MB each at a million batches): the same
    arithmetic as the plain expressions, to the bit."""
    rng = np.random.default_rng(1)
    x, y = np.arange(5000.0), rng.random(5000) ** 3 + 1e-4 * np.arange(5000)
    xc = x - x.mean()
    slope = float(xc @ (y - y.mean()) / float(xc @ xc))
    residual = y - y.mean() - slope * xc
    r2 = 1 - float(residual @ residual) / float(((y - y.mean()) ** 2).sum())
    found = linear_slope(x, y)
    assert (found.per_step, found.r2) == (slope, r2)


def test_mad_outliers_flags_only_spikes():
    y = noisy(100, 0.1, 11)
    y[[10, 50]] = 1.0
    assert np.flatnonzero(mad_outliers(y)).tolist() == [10, 50]


def test_one_percentile_interpolates_between_ranks():
    # Ten values 1..10: the 90th percentile lies between 9 and 10, where an index pick says 9.
    assert percentile(np.arange(1.0, 11.0), 90) == pytest.approx(9.1)
    assert np.isnan(percentile([], 90))


def test_periodic_bursts_find_the_period_and_their_share():
    y = noisy(200, 0.1, 12, 0.01)
    y[9::10] += 0.3  # every 10th batch
    bursts = periodic_bursts(y)
    assert bursts.period == 10 and bursts.count == 20
    assert bursts.share == pytest.approx(0.1)
    assert bursts.time_share == pytest.approx(6.0 / y.sum(), rel=0.05)


def test_a_spike_and_the_slow_batch_after_it_are_one_burst():
    # Evaluation every 10 batches, and half the time the batch after it is slow too
    # (re-filling what the evaluation evicted): still period 10, still every slow batch counted.
    y = noisy(200, 0.1, 18, 0.01)
    y[9::10] += 0.3
    y[10::20] += 0.15
    bursts = periodic_bursts(y)
    assert bursts.period == 10 and bursts.count == 30


def test_irregular_spikes_have_no_period():
    y = noisy(200, 0.1, 13, 0.01)
    y[[5, 17, 60, 61, 150]] += 0.3
    assert periodic_bursts(y).period is None


def test_change_point_says_which_way_the_time_moved():
    up = change_point(np.concatenate([noisy(100, 0.1, 14), noisy(100, 0.2, 15)]))
    down = change_point(np.concatenate([noisy(100, 0.2, 16), noisy(100, 0.1, 17)]))
    assert up.direction == "up" and up.after == pytest.approx(0.2, rel=0.05)
    assert down.direction == "down" and down.before == pytest.approx(0.2, rel=0.05)


def test_format_ratio_takes_the_confidence_level():
    from dcnprobe.analysis import format_ratio

    assert format_ratio(1.314, 1.14, 1.49, 0.95) == "1.31x (95% CI 1.14-1.49)"
    assert format_ratio(1.314, 1.10, 1.52, 0.99) == "1.31x (99% CI 1.10-1.52)"
    assert format_ratio(1.314, None, None, 0.95) == "1.31x"
