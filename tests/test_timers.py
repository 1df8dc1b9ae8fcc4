import pytest

from dcnprobe.hooks import BATCH_TIMES
from dcnprobe.timers import PhaseTimer


class FakeClock:
    """Advances only when told to: durations are exact."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


class CountingSync:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1


def run_batch(timer, clock):
    timer.begin()
    clock.advance(0.25)  # blocked in next()
    timer.waited()
    for name, seconds in [("to_device", 0.5), ("forward", 1.0), ("backward", 2.0), ("optimizer", 0.125)]:
        with timer.phase(name):
            clock.advance(seconds)
    clock.advance(0.0625)  # loop work outside any phase
    return timer.end()


def test_exact_durations_with_a_fake_clock():
    clock = FakeClock()
    times = run_batch(PhaseTimer(clock=clock), clock)
    assert times == {
        "data_wait": 0.25, "to_device": 0.5, "forward": 1.0, "backward": 2.0, "optimizer": 0.125,
        "cache_clear": 0.0, "other": 0.0625, "total": 3.9375,
    }
    assert set(times) == set(BATCH_TIMES)


@pytest.mark.parametrize(("mode", "per_batch"), [("batch", 1), ("phase", 4), ("none", 0)])
def test_sync_count_per_mode(mode, per_batch):
    clock, sync = FakeClock(), CountingSync()
    timer = PhaseTimer(clock=clock, sync=sync, mode=mode)
    for _ in range(3):
        run_batch(timer, clock)
    assert sync.calls == 3 * per_batch


def test_sync_happens_before_the_clock_is_read():
    """Device work finished by the sync belongs to the batch, not to the next data wait."""
    clock = FakeClock()

    def slow_sync():
        clock.advance(5.0)  # the device was still busy

    timer = PhaseTimer(clock=clock, sync=slow_sync, mode="batch")
    times = run_batch(timer, clock)
    assert times["total"] == pytest.approx(3.9375 + 5.0)
    assert times["other"] == pytest.approx(0.0625 + 5.0)


def test_repeated_phase_accumulates():
    clock = FakeClock()
    timer = PhaseTimer(clock=clock)
    timer.begin()
    timer.waited()
    for _ in range(3):
        with timer.phase("forward"):
            clock.advance(1.0)
    assert timer.end()["forward"] == 3.0


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError):
        PhaseTimer(mode="sometimes")
