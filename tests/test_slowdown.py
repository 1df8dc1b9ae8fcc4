"""The live slowdown statistics (dcnprobe.slowdown), the harness's EarlyStop on top of
them, and the probe's early warning, on synthetic series with known answers and a fake
clock: no test sleeps."""

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from dcnprobe.contract import Exit
from dcnprobe.harness.early_stop import EarlyStop
from dcnprobe.launched import warn_on_slowdown
from dcnprobe.live.early_warning import CHECK_INTERVAL_S, EarlyWarning, SlowdownStop
from dcnprobe.probe import Probe
from dcnprobe.runs import read_run
from dcnprobe.slowdown import SlowdownMonitor


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def batches(epoch, n, seconds, seed=0, noise=0.03, phase="forward"):
    """Batch records whose total is `seconds` with multiplicative noise, all extra time
    in `phase`."""
    rng = np.random.default_rng(seed + epoch)
    for i in range(n):
        total = seconds * (1 + noise * rng.standard_normal())
        yield {"type": "batch", "epoch": epoch, "batch": i, "total": total, "data_wait": 0.001,
               phase: total - 0.001}


def feed(target, clock, records):
    for record in records:
        clock.now += record["total"]
        target.feed(record)


def first_decision(monitor, clock, records):
    """The batch (1-based) at which the monitor first calls the epoch slow, or None."""
    for record in records:
        clock.now += record["total"]
        monitor.feed(record)
        if monitor.check() is not None:
            return record["batch"] + 1
    return None


# -- the monitor --------------------------------------------------------------------------


def test_a_clear_step_is_called_within_a_few_dozen_batches():
    clock = Clock()
    monitor = SlowdownMonitor(1.2, batches_per_epoch=200, clock=clock)
    feed(monitor, clock, batches(1, 200, 0.10))
    at = first_decision(monitor, clock, batches(2, 200, 0.15))
    # 10 warm-up batches dropped, then 20 steady ones: the first check that may decide.
    assert at == 30
    evidence = monitor.last
    assert evidence.statistic == "median" and evidence.ratio == pytest.approx(1.5, abs=0.05)
    assert evidence.low > 1.2 and evidence.high < 1.7


@pytest.mark.parametrize("seed", range(5))
def test_a_healthy_epoch_is_never_called_slow(seed):
    clock = Clock()
    monitor = SlowdownMonitor(1.2, batches_per_epoch=200, clock=clock)
    feed(monitor, clock, batches(1, 200, 0.10, seed=seed, noise=0.15))
    assert first_decision(monitor, clock, batches(2, 200, 0.105, seed=seed + 10, noise=0.15)) is None
    assert monitor.last.ratio < 1.2


def test_a_small_slowdown_under_the_threshold_is_not_called():
    clock = Clock()
    monitor = SlowdownMonitor(1.2, batches_per_epoch=200, clock=clock)
    feed(monitor, clock, batches(1, 200, 0.10))
    assert first_decision(monitor, clock, batches(2, 200, 0.115)) is None


def test_bursts_are_caught_by_the_mean():
    """One batch in four waits 0.5 s: the median hardly moves, the mean doubles."""
    clock = Clock()
    monitor = SlowdownMonitor(1.2, batches_per_epoch=200, clock=clock)
    feed(monitor, clock, batches(1, 200, 0.10))
    bursty = [dict(r, total=r["total"] + (0.5 if r["batch"] % 4 == 3 else 0.0)) for r in batches(2, 200, 0.10)]
    at = first_decision(monitor, clock, bursty)
    assert at is not None and at <= 60
    found = monitor.check() or monitor.last
    assert monitor.last.statistic == "median" and monitor.last.ratio < 1.1
    assert found is not None


def test_a_huge_slowdown_is_called_on_time_before_enough_batches():
    clock = Clock()
    monitor = SlowdownMonitor(1.2, batches_per_epoch=100, clock=clock)
    feed(monitor, clock, batches(1, 100, 0.20))  # epoch 1: about 20 s
    assert first_decision(monitor, clock, batches(2, 2, 18.0)) is None  # 36 s: under 2x epoch 1
    evidence = first_decision(monitor, clock, batches(2, 3, 18.0))  # 54 s
    assert evidence is not None
    assert monitor.last.statistic == "time" and "over 2x" in monitor.last.describe()


def test_the_time_rule_needs_more_than_a_few_seconds():
    """Epochs of a second: the next epoch's worker start-up and a reader's polling delay
    must not pass for a slowdown (TIME_RULE_FLOOR_S)."""
    clock = Clock()
    monitor = SlowdownMonitor(1.2, batches_per_epoch=100, clock=clock)
    feed(monitor, clock, batches(1, 100, 0.01))  # epoch 1: about 1 s
    clock.now += 5.0  # workers start, the harness polls late
    assert first_decision(monitor, clock, batches(2, 2, 0.01)) is None


def test_a_finished_epoch_is_not_called_slow_on_time():
    """The time rule is for an epoch still running; a finished one is judged by its batches."""
    clock = Clock()
    monitor = SlowdownMonitor(1.2, batches_per_epoch=3, clock=clock, min_batches=100)
    feed(monitor, clock, batches(1, 3, 0.1))
    feed(monitor, clock, batches(2, 3, 0.1))
    clock.now += 100  # validation after epoch 2's last batch
    assert monitor.check() is None


def test_phase_growth_names_the_phase_that_took_the_time():
    clock = Clock()
    monitor = SlowdownMonitor(1.2, batches_per_epoch=100, clock=clock)
    feed(monitor, clock, batches(1, 100, 0.10))
    feed(monitor, clock, batches(2, 40, 0.30, phase="data_wait"))
    growth = monitor.phase_growth()
    phase, seconds = next(iter(growth.items()))
    assert phase == "data_wait" and seconds == pytest.approx(0.3, abs=0.03)


def test_a_check_is_cheap_on_a_huge_epoch():
    """Check cost is bounded by max_sample, not by the epoch's length."""
    clock = Clock()
    monitor = SlowdownMonitor(1.2, batches_per_epoch=50_000, clock=clock, max_sample=256)
    for i in range(50_000):
        monitor.add(1, 0.1 + 0.001 * (i % 7))
    for i in range(5_000):
        monitor.add(2, 0.2 + 0.001 * (i % 5))
    evidence = monitor.check()
    assert evidence is not None and evidence.ratio == pytest.approx(2.0, abs=0.1)
    assert monitor._base.size <= 256


# -- the harness's interface ------------------------------------------------------------------


def test_early_stop_keeps_its_interface():
    clock = Clock()
    stop = EarlyStop(1.2, batches_per_epoch=None, clock=clock)
    stop.batches_per_epoch = 200  # the harness learns it from the header
    assert stop.batches_per_epoch == 200 and stop.monitor.batches_per_epoch == 200
    stop.feed({"type": "header"})
    stop.feed({"type": "memory", "epoch": 1, "total": 9.0})
    feed(stop, clock, batches(1, 200, 0.10))
    assert stop.decide() is None and stop.last_ratio is None
    feed(stop, clock, batches(2, 30, 0.15))
    reason = stop.decide()
    assert reason and "1.50x epoch 1" in reason and "99% CI" in reason
    ratio, low, high = stop.last_ratio
    assert ratio == pytest.approx(1.5, abs=0.05) and low < ratio < high


def first_healthy(stop, clock, records):
    """The batch (1-based) at which EarlyStop first calls the trial clearly healthy, or None."""
    for record in records:
        clock.now += record["total"]
        stop.feed(record)
        if stop.decide_healthy() is not None:
            return record["batch"] + 1
    return None


def test_a_healthy_last_epoch_ends_the_trial_at_half_of_it():
    """Bisect's sequential test: the other side of the early stop."""
    clock = Clock()
    stop = EarlyStop(1.2, batches_per_epoch=200, clock=clock, healthy_in=2)
    feed(stop, clock, batches(1, 200, 0.10))
    records = list(batches(2, 200, 0.10))
    assert first_healthy(stop, clock, records[:99]) is None
    clock.now += records[99]["total"]
    stop.feed(records[99])
    reason = stop.decide_healthy()
    assert reason.startswith("epoch 2 runs 1.00x epoch 1 by median batch time (99% CI 0.9")
    assert reason.endswith("after 100 batches")
    assert stop.decide_healthy() is None  # asked again within check_every batches: no new bootstrap


@pytest.mark.parametrize("ratio", [1.2, 1.5])
def test_an_epoch_at_or_over_the_threshold_is_never_called_healthy(ratio):
    clock = Clock()
    stop = EarlyStop(1.2, batches_per_epoch=200, clock=clock, healthy_in=2)
    feed(stop, clock, batches(1, 200, 0.10))
    assert first_healthy(stop, clock, batches(2, 200, 0.10 * ratio)) is None


@pytest.mark.parametrize("ratio", [0.3, 0.8])
def test_an_epoch_far_faster_than_epoch_1_is_not_called_healthy(ratio):
    """Beyond 1/threshold faster, epoch 1 was no baseline (warm-up, load that came and
    went): a slowdown building up after it could hide, so the trial runs on."""
    clock = Clock()
    stop = EarlyStop(1.2, batches_per_epoch=200, clock=clock, healthy_in=2)
    feed(stop, clock, batches(1, 200, 0.10))
    assert first_healthy(stop, clock, batches(2, 200, 0.10 * ratio)) is None


def test_an_epoch_somewhat_faster_than_epoch_1_is_healthy():
    clock = Clock()
    stop = EarlyStop(1.2, batches_per_epoch=200, clock=clock, healthy_in=2)
    feed(stop, clock, batches(1, 200, 0.10))
    assert first_healthy(stop, clock, batches(2, 200, 0.10 * 0.9)) == 100


def test_a_slow_half_hidden_by_the_mean_is_not_called_healthy():
    """Every fifth batch four times longer: the median is unchanged, the mean is not."""
    clock = Clock()
    stop = EarlyStop(1.2, batches_per_epoch=200, clock=clock, healthy_in=2)
    feed(stop, clock, batches(1, 200, 0.10))
    bursty = [dict(r, total=r["total"] * (4 if r["batch"] % 5 == 0 else 1)) for r in batches(2, 200, 0.10)]
    assert first_healthy(stop, clock, bursty) is None


def test_only_the_last_epoch_is_called_healthy_and_only_when_asked():
    clock = Clock()
    three = EarlyStop(1.2, batches_per_epoch=200, clock=clock, healthy_in=3)
    feed(three, clock, batches(1, 200, 0.10))
    assert first_healthy(three, clock, batches(2, 200, 0.10)) is None  # epoch 3 may still be slow
    assert first_healthy(three, clock, batches(3, 200, 0.10)) == 100
    clock = Clock()
    never = EarlyStop(1.2, batches_per_epoch=200, clock=clock)
    feed(never, clock, batches(1, 200, 0.10))
    assert first_healthy(never, clock, batches(2, 200, 0.10)) is None


# -- the probe's early warning ---------------------------------------------------------------------


def listener(action, tmp_path, clock, **kwargs):
    written, lines = [], []
    warning = EarlyWarning(action, tmp_path, lambda kind, record: written.append((kind, dict(record))),
                           threshold=1.2, clock=clock, emit=lines.append, analyze=False, **kwargs)
    warning.on_start({"batches_per_epoch": 200})
    return warning, written, lines


def run_listener(warning, clock, records):
    for record in records:  # as the probe hands them over: stamped with the run time
        clock.now += record["total"]
        warning.on_batch({**{k: v for k, v in record.items() if k != "type"}, "t": clock.now})


def test_warn_writes_one_line_and_one_record(tmp_path):
    clock = Clock()
    warning, written, lines = listener("warn", tmp_path, clock)
    run_listener(warning, clock, batches(1, 200, 0.10))
    run_listener(warning, clock, batches(2, 200, 0.15, phase="data_wait"))
    assert len(lines) == 1 and len(written) == 1
    kind, record = written[0]
    assert kind == "warning" and record["epoch"] == 2 and record["batch"] == 30
    assert record["ratio"] == pytest.approx(1.5, abs=0.05) and record["ratio_ci"][0] > 1.2
    assert record["grew"] == "data_wait" and record["action"] == "warn"
    line = lines[0]
    assert line.startswith("dcnprobe: warning: epoch 2 runs 1.5") and "99% CI" in line
    assert "data_wait" in line and f"dcnprobe analyze {tmp_path}" in line


def test_the_check_runs_at_most_every_quarter_second_and_a_fast_loop_is_still_warned(tmp_path):
    """Batches of 2 ms: the check (every 10 batches) would run 50 times a second in the
    training thread; it runs at most every CHECK_INTERVAL_S of the run's clock, and the
    slowdown is still found, about that much later."""
    clock = Clock()
    warning, written, lines = listener("warn", tmp_path, clock)
    checks = []  # when the monitor looked at the batches (its steady sample of the running epoch)
    steady = warning.monitor._steady
    warning.monitor._steady = lambda totals, expected, recent: (recent and checks.append(clock.now)) or steady(
        totals, expected, recent)
    run_listener(warning, clock, batches(1, 200, 0.002))
    run_listener(warning, clock, batches(2, 200, 0.003))
    assert len(lines) == 1 and written[0][1]["epoch"] == 2
    assert len(checks) >= 2 and min(np.diff(checks)) >= CHECK_INTERVAL_S
    assert written[0][1]["batch"] <= 30 + CHECK_INTERVAL_S / 0.003 + 10


def test_warn_again_only_when_the_ratio_has_doubled(tmp_path):
    clock = Clock()
    warning, _, lines = listener("warn", tmp_path, clock)
    run_listener(warning, clock, batches(1, 200, 0.10))
    run_listener(warning, clock, batches(2, 200, 0.15))
    assert len(lines) == 1
    run_listener(warning, clock, batches(3, 200, 0.25))  # 2.5x: not clearly above 2 x 1.5
    assert len(lines) == 1
    run_listener(warning, clock, batches(4, 200, 0.40))  # 4x
    assert len(lines) == 2 and "epoch 4 runs 4.0" in lines[1]


def test_stop_raises_a_clean_exit_with_its_own_code(tmp_path):
    clock = Clock()
    warning, written, lines = listener("stop", tmp_path, clock)
    run_listener(warning, clock, batches(1, 200, 0.10))
    with pytest.raises(SlowdownStop) as stopped:
        run_listener(warning, clock, batches(2, 200, 0.15))
    assert stopped.value.code == Exit.SLOW != Exit.STALLED
    assert "1.5" in stopped.value.reason and "stopping the run" in lines[0]
    assert written[0][1]["action"] == "stop"


def test_unknown_action_is_refused(tmp_path):
    with pytest.raises(ValueError, match="on_slowdown"):
        EarlyWarning("panic", tmp_path, lambda *a: None, threshold=1.2)
    with pytest.raises(ValueError, match="on_slowdown"):
        warn_on_slowdown(Probe(tmp_path), "panic")


def probe_loop(probe, clock, epochs=2, n=60, slow=2.0):
    for epoch in range(epochs):
        for _ in probe.loader(range(n)):
            with probe.phase("forward"):
                clock.now += 0.010 * (slow if epoch else 1.0)
            probe.end_batch()


def test_probe_stop_ends_the_run_with_status_slow(tmp_path):
    clock = Clock()
    probe = Probe(tmp_path, clock=clock)
    warn_on_slowdown(probe, "stop")
    with pytest.raises(SystemExit) as stopped, probe:
        probe_loop(probe, clock)
    assert stopped.value.code == Exit.SLOW
    run = read_run(tmp_path)
    assert run.status == "slow" and "2.00x epoch 1" in run.footer["reason"]
    assert len(run.warnings) == 1 and run.warnings[0]["grew"] == "forward"
    assert run.batches["epoch"].max() == 2 and len(run.batches) < 120
    footers = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()
               if '"type":"footer"' in line]
    assert len(footers) == 1


def test_a_warned_probe_warns_and_runs_on(tmp_path, capsys):
    clock = Clock()
    probe = Probe(tmp_path, clock=clock)
    warn_on_slowdown(probe)
    with probe:
        probe_loop(probe, clock)
    run = read_run(tmp_path)
    assert run.status == "ok" and len(run.batches) == 120
    assert len(run.warnings) == 1
    assert capsys.readouterr().err.count("dcnprobe: warning: epoch 2 runs 2.00x epoch 1") == 1


def test_a_probe_only_records(tmp_path, capsys):
    clock = Clock()
    with Probe(tmp_path, clock=clock) as probe:
        probe_loop(probe, clock)
    assert read_run(tmp_path).warnings == [] and "warning" not in capsys.readouterr().err


def test_a_launch_config_redirects_the_probe_and_adds_its_warning(tmp_path):
    from dcnprobe.contract import AttachConfig
    from dcnprobe.launched import apply_launch

    probe = Probe(tmp_path)
    apply_launch(probe, AttachConfig(run_dir=str(tmp_path / "a"), on_slowdown="stop", max_batches=7))
    warnings = [listener for listener in probe.listeners if isinstance(listener, EarlyWarning)]
    assert probe.out_dir == tmp_path / "a" and probe.max_batches == 7
    assert [w.action for w in warnings] == ["stop"] and warnings[0].run_dir == tmp_path / "a"


@pytest.mark.slow  # waits for the stall watchdog in a real process
def test_a_stall_prints_a_warning_line(tmp_path):
    """on_stall=exit ends the process: run it in a child and read its stderr."""
    script = f"""
import time
from dcnprobe.probe import Probe
probe = Probe({str(tmp_path)!r}, stall_floor_s=0.3)
probe.watchdog.poll_s = 0.05
probe.watchdog.first_batch_s = 0.3
probe.start()
for i in probe.loader(range(10)):
    probe.end_batch()
    if i == 3:
        time.sleep(30)  # the hang
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, "PATH": "/nonexistent"})  # no py-spy: faulthandler
    assert done.returncode == Exit.STALLED
    assert "dcnprobe: warning: stalled: no batch finished for" in done.stderr
    assert read_run(tmp_path).status == "stalled"


# -- a real run ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_with_a_planted_slowdown_stops_itself(small_data, tmp_path):
    """The built-in trainer with a metric over an ever-growing buffer: epoch 2 is called
    slow live and the run ends itself, footer `slow`, exit code Exit.SLOW."""
    done = subprocess.run(
        [sys.executable, "-m", "dcnprobe", "train", "--epochs", "3", "--max-batches", "64", "--data", small_data,
         "--batch-size", "512", "--fault", "unbounded-metric", "--on-slowdown", "stop", "--no-checkpoints",
         "--quiet", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == Exit.SLOW, done.stderr[-2000:]
    assert "dcnprobe: warning: epoch 2 runs" in done.stderr and "stopping the run" in done.stderr
    run = read_run(tmp_path)
    assert run.status == "slow" and len(run.warnings) == 1
    assert run.batches["epoch"].max() == 2 and (run.batches["epoch"] == 2).sum() < 64


def test_a_rank_names_itself_and_a_rank_that_waits_says_so(tmp_path):
    # Rank 1 of a distributed run slows in its own forward; rank 0 only waits for it in
    # the collectives. Both warn, each naming its rank; only rank 1's line puts the time on
    # its own work, and neither looks for a cause of rank 0's wait in rank 0's record.
    lines = {}
    for rank, phase in ((1, "forward"), (0, "collective")):
        clock = Clock()
        run_dir = tmp_path / f"rank{rank}"
        warning, written, lines[rank] = listener("warn", run_dir, clock)
        warning.on_start({"batches_per_epoch": 200, "rank": rank, "world_size": 2})
        run_listener(warning, clock, batches(1, 200, 0.10))
        # Epoch 2: the same forward as epoch 1 and 60 ms more in `phase`.
        run_listener(warning, clock, ({**b, phase: b.get(phase, 0.0) + 0.06, "total": b["total"] + 0.06}
                                      for b in batches(2, 200, 0.10)))
        assert written[0][1]["rank"] == rank and written[0][1]["grew"] == phase
    assert lines[1][0].startswith("dcnprobe: warning: rank 1: epoch 2 runs 1.6")
    assert "the extra time is in forward" in lines[1][0]
    assert lines[0][0].startswith("dcnprobe: warning: rank 0: epoch 2 runs 1.6")
    assert "waiting in collectives" in lines[0][0] and "likely cause" not in lines[0][0]
    assert lines[0][0].endswith(f"details: dcnprobe analyze {tmp_path}")  # RUN, not RUN/rank0


def test_under_a_sampler_the_check_runs_on_its_thread_and_the_training_thread_acts(tmp_path):
    """A probe's sampler thread calls on_sample after each memory sample: the monitor's
    check runs there, never in on_batch, and the warning is written by the training thread
    at its next batch, naming the batch the check saw last."""
    clock = Clock()
    written, lines, checked_on = [], [], []
    warning = EarlyWarning("warn", tmp_path, lambda kind, record: written.append((threading.get_ident(), kind)),
                           threshold=1.2, clock=clock, emit=lines.append, analyze=False)
    warning.on_start({"batches_per_epoch": 200})
    check = warning.monitor.check

    def checked():
        evidence = check()
        checked_on.append((threading.get_ident(), evidence is not None))
        return evidence

    warning.monitor.check = checked

    def tick():
        sampler = threading.Thread(target=warning.on_sample, args=({"t": clock.now},))
        sampler.start()
        sampler.join()

    for number, record in enumerate([*batches(1, 200, 0.10), *batches(2, 200, 0.15)], start=1):
        clock.now += record["total"]
        warning.on_batch({**{k: v for k, v in record.items() if k != "type"}, "t": clock.now})
        if number % 5 == 0:  # a tick every 5 batches (0.5 s at 0.1 s a batch)
            tick()
            if checked_on and checked_on[-1][1]:
                break
    training = threading.get_ident()
    assert checked_on[-1][1] and training not in {thread for thread, _ in checked_on}  # all on the sampler's
    assert not written  # found on that thread: acted on at the training thread's next batch
    warning.on_batch({"epoch": 2, "batch": 99, "total": 0.15, "t": clock.now + 0.15})
    assert written == [(training, "warning")] and len(lines) == 1
    assert "epoch 2 runs 1.5" in lines[0]


def test_when_the_samples_stop_coming_the_training_thread_checks_again(tmp_path):
    """A listener that heard a sampler once, then none for over SAMPLER_SILENT_S of run
    time (a sampler that died): the checks come back to the training thread, and the
    slowdown is still found."""
    from dcnprobe.live.early_warning import SAMPLER_SILENT_S

    clock = Clock()
    warning, written, lines = listener("warn", tmp_path, clock)
    warning.on_sample({"t": clock.now})
    run_listener(warning, clock, batches(1, 200, 0.10))
    assert not written
    run_listener(warning, clock, batches(2, 200, 0.15 + SAMPLER_SILENT_S / 100))  # 60 s gone by batch 80
    assert lines and written[0][1]["epoch"] == 2
