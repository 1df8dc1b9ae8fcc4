import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from dcnprobe.harness import TrialCache, TrialRunner, TrialSpec, run_trial
from dcnprobe.harness.early_stop import EarlyStop
from dcnprobe.harness.runner import TrialResult
from dcnprobe.records import RecordFollower
from dcnprobe.settings import Settings

from conftest import TINY_BATCH, builtin_spec

PLUGINS = Path(__file__).parent / "plugins" / "slow_loader.py"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def feed_epoch(stop, clock, epoch, n, seconds, spread=0.002):
    for i in range(n):
        clock.now += seconds
        stop.feed({"type": "batch", "epoch": epoch, "batch": i, "total": seconds + spread * ((i * 7) % 5 - 2)})


def test_early_stop_when_the_later_epoch_is_clearly_slow():
    clock = Clock()
    stop = EarlyStop(1.2, batches_per_epoch=200, clock=clock)
    feed_epoch(stop, clock, 1, 200, 0.10)
    assert stop.decide() is None
    feed_epoch(stop, clock, 2, 15, 0.15)
    assert stop.decide() is None  # too few batches yet
    feed_epoch(stop, clock, 2, 15, 0.15)
    reason = stop.decide()
    assert reason and "1.50x epoch 1" in reason


def test_no_early_stop_for_a_healthy_epoch():
    clock = Clock()
    stop = EarlyStop(1.2, batches_per_epoch=200, clock=clock)
    feed_epoch(stop, clock, 1, 200, 0.10)
    for _ in range(20):
        feed_epoch(stop, clock, 2, 10, 0.105)
        assert stop.decide() is None


def test_early_stop_after_twice_the_first_epoch():
    """A very slow epoch (the report's 90x) is stopped on time, before it has enough batches."""
    clock = Clock()
    stop = EarlyStop(1.2, batches_per_epoch=100, clock=clock)
    feed_epoch(stop, clock, 1, 100, 0.20)  # epoch 1: 20 s
    feed_epoch(stop, clock, 2, 2, 18.0)
    assert stop.decide() is None
    feed_epoch(stop, clock, 2, 1, 18.0)  # 54 s into epoch 2 > 2 x 20 s
    assert "over 2x" in stop.decide()


def test_record_tail_waits_for_complete_lines(tmp_path):
    path = tmp_path / "run.jsonl"
    tail = RecordFollower(path)
    assert tail.read() == []
    path.write_text('{"type":"header","schema":1}\n{"type":"ba')
    assert tail.read() == [{"type": "header", "schema": 1}]
    with open(path, "a") as f:
        f.write('tch","epoch":1,"total":0.5}\n')
    assert tail.read() == [{"type": "batch", "epoch": 1, "total": 0.5}]


def test_spec_key_changes_with_settings_and_arguments_reproduce_them(tiny_data):
    a = builtin_spec(tiny_data, settings=Settings(num_workers=2), max_batches=200)
    assert a.key() == builtin_spec(tiny_data, settings=Settings(num_workers=2), max_batches=200).key()
    assert a.key() != builtin_spec(tiny_data, settings=Settings(num_workers=4), max_batches=200).key()
    assert a.key() != builtin_spec(tiny_data, settings=Settings(num_workers=2), max_batches=200, replicate=1).key()
    args, config = a.process(Path("/x"), stall_after_s=30)
    module = args.index("-m")
    assert args[module:module + 3] == ["-m", "dcnprobe", "train"] and "--no-persistent-workers" in args
    assert args[args.index("--num-workers") + 1] == "2"
    assert args[args.index("--max-batches") + 1] == "200"
    assert config.run_dir == "/x" and config.stall_after == 30


def test_a_user_command_is_given_only_the_settings_it_asks_for(tmp_path):
    from dcnprobe.command import Command

    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    command = Command.parse(["python", str(script), "--device", "{device}"])
    spec = TrialSpec(command=command, settings=Settings(device="cpu", num_workers=2, threads=3),
                     applied=("device", "num_workers"), epochs=3, max_batches=50)
    args, config = spec.process(tmp_path / "out")
    assert args == ["python", str(script), "--device", "cpu"]
    assert config.settings == {"num_workers": "2"}  # device went by placeholder; threads was not asked for
    assert (config.epochs, config.max_batches) == (3, 50)
    before = spec.key()
    script.write_text("print('changed')\n")
    assert TrialSpec(command=command, settings=spec.settings, applied=spec.applied, epochs=3,
                     max_batches=50).key() != before  # the script's code is part of the key


def tiny_spec(tiny_data, **settings):
    return builtin_spec(tiny_data, (f"{PLUGINS}:SlowerEachEpoch",),
                        settings=Settings(device="cpu", batch_size=TINY_BATCH, **settings))


@pytest.mark.slow
def test_a_slow_trial_is_stopped_early_and_analysed(small_data, tmp_path):
    spec = builtin_spec(small_data, (f"{PLUGINS}:SlowerEachEpoch",), max_batches=60)
    result = run_trial(spec, tmp_path)
    assert result.status == "slow"
    assert result.stopped and "stopped as slow" in result.stopped
    assert result.ratio > 1.2 and result.cause == "metric-accumulation"
    assert len(result.epoch_s) == 2
    assert (tmp_path / "analysis.json").exists()


def test_a_crashing_trial_is_reported_not_raised(tiny_data, tmp_path):
    script = tmp_path / "crash.py"
    script.write_text("import sys\nprint('reading data...')\nsys.exit('no such file: /nonexistent.tsv')\n")
    from dcnprobe.command import Command

    result = run_trial(TrialSpec(command=Command.parse(["python", str(script)])), tmp_path / "trial")
    assert result.status == "crashed" and result.exit_code == 1
    assert "no such file" in result.error


class Interrupted(Exception):
    pass


def test_killing_a_trial_kills_its_workers(tiny_data, tmp_path):
    """The harness interrupted (Ctrl-C, or dcnprobe failing) while a trial trains: the trial
    and its DataLoader workers go with it. No timing: the interruption comes once the
    workers are seen, however long that takes on a busy machine."""
    spec = builtin_spec(tiny_data, settings=Settings(device="cpu", batch_size=TINY_BATCH, num_workers=2,
                                                     persistent_workers=True), epochs=50, max_batches=None)
    seen: dict[str, list[int]] = {}

    def watch(progress):
        if progress.epoch < 1:
            return
        trial = next(p for p in psutil.Process().children() if "dcnprobe" in " ".join(p.cmdline()))
        workers = [c.pid for c in trial.children()]
        if len(workers) == 2:
            seen["pids"] = [trial.pid, *workers]
            raise Interrupted

    with pytest.raises(Interrupted):
        run_trial(spec, tmp_path, budget_s=600, on_progress=watch)
    deadline = time.monotonic() + 30
    alive = seen["pids"]
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
        time.sleep(0.1)
    assert not alive


def test_a_cached_trial_points_at_its_records_where_the_output_now_is(tmp_path):
    spec = builtin_spec(settings=Settings(device="cpu"))
    cache = TrialCache(tmp_path / "first")
    cache.prepare(spec)
    cache.put(TrialResult(key=spec.key(), spec=spec.describe(), status="ok", run_dir="relative/to/another/cwd"))
    os.rename(tmp_path / "first", tmp_path / "moved")
    assert TrialCache(tmp_path / "moved").get(spec).run_dir == str(tmp_path / "moved" / "trials" / spec.key())


def test_runner_caches_and_rechecks_a_close_call(tmp_path, monkeypatch):
    runner, scripted, _ = scripted_runner(tmp_path, monkeypatch, ["ok"])
    first = runner.trial(Settings(device="cpu"))
    again = runner.trial(Settings(device="cpu"))
    assert again.key == first.key and runner.ran == 1 and runner.reused == 1 and scripted.runs == 1
    assert TrialCache(tmp_path).get(replace(runner.template, settings=Settings(device="cpu"))) is not None
    # a verdict whose interval straddles the threshold is close to call
    close = type(first)(**{**first.to_json(), "status": "ok", "stopped": None, "ratio": 1.2, "ratio_ci": [1.1, 1.3]})
    assert runner.noisy(close)
    assert not runner.noisy(type(first)(**{**close.to_json(), "ratio_ci": [1.25, 1.3]}))


@pytest.mark.slow
def test_bisect_survives_a_sigkill_and_resumes(small_data, tmp_path):
    out = tmp_path / "bisect"
    command = [sys.executable, "-m", "dcnprobe", "bisect", "--data", small_data, "--batch-size", str(TINY_BATCH),
               "--max-batches", "60", "--fault", f"{PLUGINS}:SlowPersistentLoader", "--out", str(out)]
    harness = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(out.glob("trials/*/result.json"))) < 2:
        time.sleep(0.2)
    harness.send_signal(signal.SIGKILL)
    harness.wait()
    finished = {p.parent.name for p in out.glob("trials/*/result.json")}
    assert len(finished) >= 2
    time.sleep(1)
    orphans = [p for p in psutil.process_iter(["cmdline"]) if str(out) in " ".join(p.info["cmdline"] or [])]
    assert not orphans, "a trial outlived the harness"

    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("(cached)") >= len(finished)
    result = json.loads((out / "bisect.json").read_text())
    assert result["culprit"] == ["num_workers", "persistent_workers"]
    assert result["trials_cached"] >= len(finished)
    assert os.path.exists(out / "report.html")


# -- a shared machine: contended trials ---------------------------------------------------


def test_a_trial_whose_epochs_saw_different_outside_load_is_contended(tmp_path):
    """The analysis reads the load from the record; the harness turns it into a status."""
    from synthetic_runs import write_run

    from dcnprobe.harness.runner import _result

    write_run(tmp_path, slowdown=1.8, outside_load={1: 0.02, 2: 0.5})
    result = _result(builtin_spec(), tmp_path, 0, None, None, 10.0, 1.2)
    assert result.status == "contended" and not result.failing
    assert set(result.outside_load) == {"1", "2"}
    assert result.outside_load["1"] < 0.05 and abs(result.outside_load["2"] - 0.5) < 0.02
    assert result.load_text().startswith("outside CPU load epoch 1 2%, epoch 2 ")


def test_a_trial_whose_epoch_1_ran_far_slower_is_unsteady_and_judges_nothing(tmp_path):
    from synthetic_runs import write_run

    from dcnprobe.harness.runner import _result

    write_run(tmp_path, slowdown=0.3)
    result = _result(builtin_spec(), tmp_path, 0, None, None, 10.0, 1.2)
    assert result.status == "unsteady" and result.undecided and not result.failing and not result.contended
    assert result.ratio_ci[1] < 1 / 1.2 and "no baseline" in result.verdict
    write_run(tmp_path / "faster", slowdown=0.9)  # faster, but within 1/threshold: a healthy verdict
    assert _result(builtin_spec(), tmp_path / "faster", 0, None, None, 10.0, 1.2).status == "ok"


def test_an_unsteady_trial_is_run_again_and_never_cached(tmp_path, monkeypatch):
    runner, scripted, _ = scripted_runner(tmp_path, monkeypatch, ["unsteady", "unsteady", "ok"])
    assert runner.trial(Settings(device="cpu")).status == "ok" and scripted.runs == 3
    runner, scripted, _ = scripted_runner(tmp_path / "again", monkeypatch, ["unsteady"] * 4, contention_tries=2)
    assert runner.failing(Settings(device="cpu")) is None and scripted.runs == 2
    assert runner.failing(Settings(device="cpu")) is None and scripted.runs == 4  # not reused from the cache


def test_a_trial_stopped_as_healthy_gets_the_analysis_s_verdict_not_its_exit_code_s(tmp_path):
    """The harness killed it (exit code -15): that is not a crash; what the record shows
    decides, and a record that shows a slowdown after all is still called slow."""
    from synthetic_runs import write_run

    from dcnprobe.harness.runner import STOPPED_HEALTHY, _result

    write_run(tmp_path / "healthy", slowdown=1.0)
    result = _result(builtin_spec(), tmp_path / "healthy", -15, STOPPED_HEALTHY, "stopped as healthy: ...", 5.0, 1.2)
    assert result.status == "ok" and result.stopped == "stopped as healthy: ..." and result.error is None
    write_run(tmp_path / "slow", slowdown=1.8)
    result = _result(builtin_spec(), tmp_path / "slow", -15, STOPPED_HEALTHY, "stopped as healthy: ...", 5.0, 1.2)
    assert result.status == "slow" and result.failing


def test_a_trial_stopped_early_as_healthy_on_a_busy_machine_is_no_verdict(tmp_path):
    """Other programs on half the machine slow the loop's own work and can hide a slowdown
    that builds up: the early healthy stop is then undecided, whatever the ratio said."""
    from synthetic_runs import write_run

    from dcnprobe.harness.runner import STOPPED_HEALTHY, _result

    write_run(tmp_path / "busy", slowdown=1.0, outside_load={1: 0.5, 2: 0.5})
    result = _result(builtin_spec(), tmp_path / "busy", -15, STOPPED_HEALTHY, "stopped as healthy: ...", 5.0, 1.2)
    assert result.status == "contended" and result.undecided and result.stopped_healthy
    assert "busy machine" in result.verdict
    write_run(tmp_path / "quiet", slowdown=1.0, outside_load={1: 0.02, 2: 0.03})
    result = _result(builtin_spec(), tmp_path / "quiet", -15, STOPPED_HEALTHY, "stopped as healthy: ...", 5.0, 1.2)
    assert result.status == "ok"
    write_run(tmp_path / "whole", slowdown=1.0, outside_load={1: 0.5, 2: 0.5})  # ran to its end: judged as ever
    assert _result(builtin_spec(), tmp_path / "whole", 0, None, None, 5.0, 1.2).status == "ok"


def test_a_busy_early_healthy_stop_runs_again_to_its_end(tmp_path, monkeypatch):
    runner, scripted, _ = scripted_runner(tmp_path, monkeypatch, ["contended", "ok"],
                                          stopped=["stopped as healthy: ...", None])
    template = runner.template = replace(runner.template, stop_when_healthy=True)
    assert runner.trial(Settings(device="cpu")).status == "ok" and scripted.runs == 2
    assert [spec.stop_when_healthy for spec in scripted.specs] == [True, False]
    assert template.stop_when_healthy  # the next trial may stop early again


class ScriptedTrials:
    """Stands in for run_trial with results given in advance (the real one is tested above)."""

    def __init__(self, statuses, stopped=None):
        self.statuses = list(statuses)
        self.stopped = list(stopped or [None] * len(self.statuses))
        self.runs = 0
        self.specs = []

    def __call__(self, spec, out, **kwargs):
        self.runs += 1
        self.specs.append(spec)
        return TrialResult(key=spec.key(), spec=spec.describe(), status=self.statuses.pop(0), ratio=1.0,
                           ratio_ci=[0.9, 1.1], outside_load={"1": 0.0, "2": 0.5}, run_dir=str(out),
                           finished_at="2026-11-25 10:00:00", stopped=self.stopped.pop(0))


def scripted_runner(tmp_path, monkeypatch, statuses, stopped=None, **kwargs):
    import dcnprobe.harness.trials as trials

    scripted = ScriptedTrials(statuses, stopped)
    monkeypatch.setattr(trials, "run_trial", scripted)
    calms = []
    runner = TrialRunner(tmp_path, builtin_spec(), wait_for_calm=lambda: calms.append(1) or 0.05, **kwargs)
    return runner, scripted, calms


def test_a_contended_trial_is_rerun_once_the_machine_is_calm_and_never_cached(tmp_path, monkeypatch):
    runner, scripted, calms = scripted_runner(tmp_path, monkeypatch, ["contended", "contended", "ok"])
    result = runner.trial(Settings(device="cpu"))
    assert result.status == "ok" and scripted.runs == 3 and len(calms) == 2
    assert [r.status for r in runner.results] == ["contended", "contended", "ok"]  # every try is in the table


def test_a_trial_contended_every_time_stays_contended_and_is_run_again_next_time(tmp_path, monkeypatch):
    runner, scripted, _ = scripted_runner(tmp_path, monkeypatch, ["contended"] * 4, contention_tries=2)
    assert runner.trial(Settings(device="cpu")).status == "contended" and scripted.runs == 2
    assert runner.failing(Settings(device="cpu")) is None  # inconclusive, neither slow nor healthy
    assert scripted.runs == 4  # the cached contended result was not reused


def test_fresh_ignores_the_cache_and_a_cached_verdict_says_when_it_was_made(tmp_path, monkeypatch):
    runner, scripted, _ = scripted_runner(tmp_path, monkeypatch, ["ok", "ok"])
    runner.trial(Settings(device="cpu"))
    again = TrialRunner(tmp_path, builtin_spec())
    lines = []
    again.report = lines.append
    again.trial(Settings(device="cpu"))
    assert again.reused == 1 and "(cached from 2026-11-25 10:00:00)" in lines[-1]
    fresh, scripted2, _ = scripted_runner(tmp_path, monkeypatch, ["ok"], fresh=True)
    fresh.trial(Settings(device="cpu"))
    assert scripted2.runs == 1 and fresh.reused == 0
