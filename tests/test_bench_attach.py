"""The attach-overhead benchmark's statistics, on synthetic batch and tick times."""

import numpy as np
from dcnprobe.benchmarks.attach_overhead import PATTERN, tick_effect


def _loop(tick_cost: float, seed: int = 0):
    """20 ms batches with 10% noise, measured ones 0.4 ms dearer; a sampler tick every
    0.5 s that takes 3 ms and adds `tick_cost` seconds to the batch it overlaps."""
    rng = np.random.default_rng(seed)
    ticks = [(t, t + 0.003) for t in np.arange(0.25, 120.0, 0.5)]
    timed, now, i, extra = [], 0.0, 0, 0.0
    while now < 118.0:
        side = PATTERN[i % len(PATTERN)]
        seconds = 0.020 * (1 + 0.1 * rng.standard_normal()) + (0.0004 if side else 0.0)
        hit = any(began < now + seconds and ended > now for began, ended in ticks if began < now + 0.1)
        if hit:
            seconds += tick_cost
            extra += tick_cost
        timed.append((side, now, now + seconds))
        now += seconds + 0.0001  # the switch between batches, untimed
        i += 1
    span = sum(end - began for _, began, end in timed)
    return timed, ticks, extra / span


def test_the_ticks_cost_is_found_in_the_batches_they_overlap():
    timed, ticks, expected = _loop(tick_cost=0.002)
    found = tick_effect(timed, ticks)
    assert found["sampler_overlapped_batches"] >= 230
    low, high = found["sampler_measured_interval"]
    assert low <= expected <= high
    assert abs(found["sampler_measured_share"] - expected) < 0.5 * expected


def test_ticks_that_cost_nothing_measure_about_nothing():
    timed, ticks, _ = _loop(tick_cost=0.0, seed=1)
    found = tick_effect(timed, ticks)
    low, high = found["sampler_measured_interval"]
    assert low <= 0.0 <= high
    assert abs(found["sampler_measured_share"]) < 0.001


def test_too_few_overlapped_batches_measure_nothing():
    timed, ticks, _ = _loop(tick_cost=0.002)
    assert tick_effect(timed, ticks[:5]) == {}
    assert tick_effect(timed, []) == {}


def _processes(seed: int, count: int = 8, pairs: int = 150, spread: float = 0.006):
    """`count` processes of (measured, bare) single-batch pairs, 20 ms; a pair's two
    batches drift together (10%), each has 2% of its own noise. Measured ones are as dear
    as bare on average over processes, but each process is off by its own amount
    (standard deviation `spread`): what layout and allocator history do."""
    rng = np.random.default_rng(seed)
    groups = []
    for offset in rng.normal(0.0, spread, count):
        drift = 0.020 * (1 + 0.1 * rng.standard_normal(pairs))
        bare = drift * (1 + 0.02 * rng.standard_normal(pairs))
        measured = drift * (1 + offset) * (1 + 0.02 * rng.standard_normal(pairs))
        groups.append([segment for m, b in zip(measured, bare) for segment in ((True, [m]), (False, [b]))])
    return groups


def test_the_interval_over_several_processes_holds_what_differs_between_them():
    """True ratio 1 on average over processes. Pairs resampled alone miss it far more
    often than a 95% interval should; processes resampled too, seldom."""
    from dcnprobe.benchmarks.timing import clustered_paired_ratio, paired_interval

    seeds = range(10)
    clustered_missed = pairs_missed = 0
    for seed in seeds:
        groups = _processes(seed)
        low, high = clustered_paired_ratio(groups, samples=200, seed=seed)["interval"]
        clustered_missed += not low <= 1.0 <= high
        low, high = paired_interval([s for g in groups for s in g], samples=200, seed=seed)
        pairs_missed += not low <= 1.0 <= high
    assert clustered_missed <= 2 and pairs_missed >= 4, (clustered_missed, pairs_missed)


def test_one_process_gives_the_pairs_interval_and_says_so():
    from dcnprobe.benchmarks.timing import clustered_paired_ratio

    (group,) = _processes(0, count=1, spread=0.0)
    found = clustered_paired_ratio([group], samples=300)
    assert found["detail"]["processes"] == 1 and len(found["detail"]["process_ratios"]) == 1
    low, high = found["interval"]
    assert low < found["value"] < high and high - low < 0.02


def test_the_floors_hooks_sit_where_the_attachs_do_and_come_off_entirely():
    import torch
    from dcnprobe.benchmarks.attach_overhead import _NoOpHooks
    from torch import nn
    from torch.optim import optimizer

    model, loss_fn = nn.Linear(4, 1), nn.MSELoss()
    backward = torch.autograd.backward
    hooks = _NoOpHooks((model, loss_fn))
    hooks.resume()
    hooks.resume()  # twice: once installed
    try:
        assert len(model._forward_pre_hooks) == len(model._forward_hooks) == 1 == len(loss_fn._forward_hooks)
        assert len(optimizer._global_optimizer_pre_hooks) >= 1 and torch.autograd.backward is not backward
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss_fn(model(torch.ones(2, 4)), torch.zeros(2, 1)).backward()  # a step runs through them
        opt.step()
    finally:
        hooks.pause()
    assert not model._forward_pre_hooks and not model._forward_hooks and not loss_fn._forward_hooks
    assert torch.autograd.backward is backward and not hooks.handles
