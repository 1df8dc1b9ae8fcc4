"""`dcnprobe attach PID`, the run seen from outside (dcnprobe.outside): frames, the process
tree on real processes, the verdict's rules on synthetic records, the CLI's bad input,
and one real attach to a training script with a planted worker leak.

Longer real runs (a healthy run, a stalled one, the permission path, --memory) are in
tests/test_outside_slow.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
from outside_runs import LEAKING_WORKERS, training, workers_of
from rich.console import Console

from dcnprobe.cli import main
from dcnprobe.cli.attach_pid import Duration
from dcnprobe.errors import UsageError
from dcnprobe.live.view import watch
from dcnprobe.outside import AttachSettings, Observer, judge, report_lines, write_verdict
from dcnprobe.outside import record as rec
from dcnprobe.outside import thresholds as th
from dcnprobe.outside.frames import Frame, dataloader_state, innermost_own, worker_part
from dcnprobe.outside.profile import parse_raw
from dcnprobe.outside.signals import OutsideSignals
from dcnprobe.outside.stacks import StacksUnavailable, check_permission
from dcnprobe.outside.tree import HELPER, MAIN, OTHER, WORKER, Target, Tree, find_target
from dcnprobe.records import MEMORY, RunWriter
from dcnprobe.runs import read_run

SITE = "/venv/lib/python3.11/site-packages"
STDLIB = "/usr/lib/python3.11"
PROJECT = "/work/proj"
KB, MB = 1024, 1 << 20

# -- frames -------------------------------------------------------------------------------------


def test_frames_are_classified_by_their_path_and_named_short():
    own = Frame.parse(f"Rows.__getitem__ ({PROJECT}/data.py:68)")
    package = Frame.parse(
        f"_BaseDataLoaderIter.__next__ ({SITE}/torch/utils/data/dataloader.py:733)"
    )
    stdlib = Frame.parse(f"Event.wait ({STDLIB}/threading.py:629)")
    assert (own.origin, package.origin, stdlib.origin) == ("own", "package", "stdlib")
    assert own.name(PROJECT) == "Rows.__getitem__ (data.py:68)"
    assert package.name() == "_BaseDataLoaderIter.__next__ (torch/utils/data/dataloader.py:733)"
    assert stdlib.name(with_line=False) == "Event.wait (threading.py)"
    assert Frame.parse(own.full()) == own
    assert Frame.parse("<module> (<string>:1)").origin == "stdlib"


def _dl(function: str) -> Frame:
    return Frame(function, f"{SITE}/torch/utils/data/dataloader.py", 1)


def test_where_a_main_thread_is_with_respect_to_the_loader():
    waiting = [
        Frame("select", f"{STDLIB}/selectors.py", 415),
        _dl("_MultiProcessingDataLoaderIter._try_get_data"),
        _dl("_BaseDataLoaderIter.__next__"),
        Frame("main", f"{PROJECT}/train.py", 9),
    ]
    loading = [
        Frame("Rows.__getitem__", f"{PROJECT}/train.py", 3),
        _dl("_SingleProcessDataLoaderIter._next_data"),
        _dl("_BaseDataLoaderIter.__next__"),
        Frame("main", f"{PROJECT}/train.py", 9),
    ]
    computing = [
        Frame("Linear.forward", f"{SITE}/torch/nn/modules/linear.py", 1),
        Frame("main", f"{PROJECT}/train.py", 9),
    ]
    assert [dataloader_state(f) for f in (waiting, loading, computing)] == [
        "waiting",
        "loading",
        None,
    ]


def test_a_forked_workers_own_frames_are_those_inside_its_worker_loop():
    loop = Frame("_worker_loop", f"{SITE}/torch/utils/data/_utils/worker.py", 374)
    idle = [
        Frame("select", f"{STDLIB}/selectors.py", 415),
        Frame("Queue.get", f"{STDLIB}/multiprocessing/queues.py", 1),
        loop,
        Frame("main", f"{PROJECT}/train.py", 9),
    ]  # the parent's frames at the fork, below the loop
    assert innermost_own(worker_part(idle)) is None
    assert innermost_own(idle).function == "main"


# -- the py-spy record's summary -------------------------------------------------------------------


def test_the_profile_is_summarised_per_process_from_the_main_thread():
    main = 'process 10:"python train.py"'
    worker = 'process 11:"python train.py"'
    wait = (
        f"<module> ({PROJECT}/train.py:30);main ({PROJECT}/train.py:20);"
        f"_BaseDataLoaderIter.__next__ ({SITE}/torch/utils/data/dataloader.py:733);"
        f"_MultiProcessingDataLoaderIter._try_get_data ({SITE}/torch/utils/data/dataloader.py:1291);"
        f"select ({STDLIB}/selectors.py:415)"
    )
    compute = f"<module> ({PROJECT}/train.py:30);main ({PROJECT}/train.py:21);forward ({SITE}/torch/nn/linear.py:1)"
    feeder = (
        f"Thread._bootstrap ({STDLIB}/threading.py:1002);Condition.wait ({STDLIB}/threading.py:327)"
    )
    fetch = (
        f"<module> ({PROJECT}/train.py:30);_worker_loop ({SITE}/torch/utils/data/_utils/worker.py:374);"
        f"_MapDatasetFetcher.fetch ({SITE}/torch/utils/data/_utils/fetch.py:54);"
        f"Rows.__getitem__ ({PROJECT}/data.py:61)"
    )
    idle = (
        f"<module> ({PROJECT}/train.py:30);_worker_loop ({SITE}/torch/utils/data/_utils/worker.py:374);"
        f"Queue.get ({STDLIB}/multiprocessing/queues.py:113)"
    )
    raw = "\n".join(
        [
            f"{main};{wait} 75",
            f"{main};{compute} 25",
            f"{main};{feeder} 100",
            f"{main};{worker};{fetch} 40",
            f"{main};{worker};{idle} 60",
            "garbage line",
        ]
    )
    profiles = parse_raw(raw, PROJECT)
    assert set(profiles) == {10, 11}
    summary = profiles[10].to_dict("main", PROJECT)
    assert (
        summary["main_thread_samples"] == 100 and summary["samples"] == 200
    )  # the feeder thread is left out
    assert summary["waiting_for_workers_share"] == 0.75
    assert summary["top_functions"][0] == ["select (selectors.py)", 0.75]
    worker_summary = profiles[11].to_dict("worker", PROJECT)
    assert worker_summary["fetching_share"] == 0.4
    # Its own code, inside the worker loop only: not the parent's frames it was forked with.
    assert worker_summary["top_own_code"] == [["Rows.__getitem__ (data.py)", 0.4]]


def test_py_spy_refused_by_the_kernel_is_one_line_with_the_fix():
    # py-spy 0.4's own words when ptrace is refused (seen running the attach as another user).
    with pytest.raises(StacksUnavailable) as refused:
        check_permission(
            "Permission Denied: Try running again with elevated permissions by going "
            "'sudo env \"PATH=$PATH\" !!'",
            42,
        )
    message = str(refused.value)
    assert (
        "\n" not in message
        and "sudo" in message
        and "ptrace_scope" in message
        and "SYS_PTRACE" in message
    )
    check_permission(
        "Error: Failed to find python version from target process", 42
    )  # not a permission problem


# -- the process tree, on real processes -----------------------------------------------------------

PARENT = textwrap.dedent("""
    import multiprocessing as mp, sys, time
    def child():
        time.sleep(60)
    if __name__ == "__main__":
        mp.set_start_method(sys.argv[1])
        p = mp.Process(target=child)
        p.start()
        print(p.pid, flush=True)
        time.sleep(60)
""")


@pytest.fixture
def parent_with_child(tmp_path, request):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    proc = subprocess.Popen(
        [sys.executable, str(script), request.param], stdout=subprocess.PIPE, text=True
    )
    try:
        child = int(proc.stdout.readline())
        yield proc.pid, child
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("parent_with_child", ["fork", "spawn"], indirect=True)
def test_the_run_is_found_from_a_child_process(parent_with_child):
    parent, child = parent_with_child
    target = find_target(child)
    assert (target.main_pid, target.given_role) == (parent, WORKER)
    assert "parent.py" in target.command and target.rerun().endswith(
        f"dcnprobe run -- {target.command}"
    )
    roles = {m.pid: m.role for m in Tree(parent).members()}
    assert roles[parent] == MAIN and roles[child] == WORKER
    assert set(roles.values()) <= {
        MAIN,
        WORKER,
        HELPER,
    }  # spawn adds multiprocessing's resource tracker
    assert find_target(parent).main_pid == parent


def test_a_pid_that_is_gone_or_not_python_is_refused(tmp_path):
    with pytest.raises(UsageError, match="no process with PID"):
        find_target(2**22 + 12345)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(UsageError, match="not a Python process"):
            find_target(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_program_the_run_starts_is_not_a_worker(tmp_path):
    script = tmp_path / "starts.py"
    script.write_text(
        "import subprocess, time\np = subprocess.Popen(['sleep', '30'])\nprint(p.pid, flush=True)\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline())
        roles = {m.pid: m.role for m in Tree(proc.pid).members()}
        assert roles == {proc.pid: MAIN, child: OTHER}
    finally:
        proc.kill()
        proc.wait()


# -- the verdict, on synthetic records -------------------------------------------------------------

TARGET = Target(
    given_pid=100,
    given_role=MAIN,
    main_pid=100,
    argv=("python", "train.py", "--workers", "2"),
    cwd=PROJECT,
    exe=None,
    user="me",
)


def _process(t: float, cpu: float, uss: float, **extra) -> dict:
    """One process's fields at time t: `cpu` cores used since 0, USS `uss` bytes."""
    return {
        "rss": uss + 200 * MB,
        "uss": uss,
        "cpu_user": cpu * t * 0.9,
        "cpu_system": cpu * t * 0.1,
        "threads": 4,
        "ctx_involuntary": int(10 * t),
        "fds": 20,
        "minflt": 0,
        "majflt": 0,
        "swap": 0,
        "ctx_voluntary": int(50 * t),
        "runqueue_wait_s": 0.0,
        **extra,
    }


def _samples(
    seconds: float = 30,
    every: float = 0.5,
    main_cpu: float = 0.9,
    worker_cpu: float = 0.5,
    worker_uss=lambda t: 10 * MB,
    main_uss=lambda t: 100 * MB,
    outside: float = 0.0,
    cores: int = 2,
    runqueue: float = 0.0,
    workers=(101, 102),
    **fields,
) -> list[dict]:
    samples = []
    steps = int(seconds / every) + 1
    for i in range(steps):
        t = i * every
        main = _process(t, main_cpu, main_uss(t), runqueue_wait_s=runqueue * t)
        sample = {
            "t": t,
            **{f"main_{k}": v for k, v in main.items()},
            "workers": [{"pid": pid, **_process(t, worker_cpu, worker_uss(t))} for pid in workers],
            "others": [],
            "sys_available": 8 << 30,
            "swap_used": 0,
            "swap_in": 0,
            "swap_out": 0,
            "attach_cpu_s": 0.05 * t,
            "cpu_freq_mhz": None,
        }
        for key, value in fields.items():
            sample[key] = value(t, sample) if callable(value) else value
        own = (
            sum(p["cpu_user"] + p["cpu_system"] for p in sample["workers"])
            + sample["main_cpu_user"]
            + sample["main_cpu_system"]
        )
        sample["machine_busy_s"] = 1000 + own + sample["attach_cpu_s"] + outside * cores * t
        samples.append(sample)
    return samples


def _record(tmp_path, samples, rounds=(), profile=None, stall_after=th.DEFAULT_STALL_AFTER_S):
    writer = RunWriter(tmp_path)
    header = rec.header(TARGET, 30.0, 0.5, uss=True)
    header["outside"]["stall_after_s"] = stall_after
    header["environment"]["cpu_count"] = 2
    writer.write("header", header)
    for sample in samples:
        writer.write(MEMORY, sample)
    for round_ in rounds:
        writer.write(rec.STACKS, round_)
    if profile is not None:
        writer.write(rec.PROFILE, {"t": 30.0, "processes": profile})
    writer.write_footer("ok", t=30.0, observed_s=30.0, ended_by="window")
    return tmp_path


def _ids(verdict) -> list[str]:
    return [c.id for c in verdict.causes]


def test_workers_whose_memory_grows_steadily_are_named(tmp_path):
    verdict = judge(_record(tmp_path, _samples(worker_uss=lambda t: 10 * MB + 300 * KB * t)))
    assert _ids(verdict) == ["worker-memory-growth"]
    finding = verdict.causes[0]
    assert finding.score == th.SCORE_WORKERS_MEMORY
    assert (
        "worker 101 +0.29 MB/s" in finding.evidence[0]
        and "the same worker processes" in finding.evidence[-1]
    )
    assert verdict.signals.workers_rate == pytest.approx(300 * KB, rel=0.01)
    assert "worker-memory-growth" in verdict.headline


def test_healthy_workers_drift_names_no_cause(tmp_path):
    # Measured on healthy forked workers here: 5-11 KB/s of copy-on-write as they run.
    verdict = judge(_record(tmp_path, _samples(worker_uss=lambda t: 10 * MB + 11 * KB * t)))
    assert verdict.causes == [] and verdict.headline.startswith("No cause")
    assert any("workers' memory flat: 0.3 MB each" in line for line in verdict.seen)
    assert verdict.to_json()["causes"][0]["id"] == "none" and verdict.to_json()["slowdown"] is None


def test_a_rise_that_levels_off_is_not_steady_growth(tmp_path):
    # 6 MB copied in the first 5 s, then flat: a clear trend over the window, but not going on.
    verdict = judge(
        _record(tmp_path, _samples(worker_uss=lambda t: 10 * MB + 6 * MB * min(t, 5) / 5))
    )
    assert verdict.signals.worker_memory[101].t > th.STEADY_T
    assert "worker-memory-growth" not in _ids(verdict)


def test_a_smaller_growth_counts_when_the_main_process_waits_for_the_workers(tmp_path):
    profile = [
        {
            "pid": 100,
            "role": "main",
            "samples": 1000,
            "main_thread_samples": 1000,
            "top_functions": [],
            "top_own_code": [],
            "dataloader_next_share": 0.85,
            "waiting_for_workers_share": 0.8,
        }
    ]
    samples = _samples(worker_cpu=0.9, worker_uss=lambda t: 10 * MB + 40 * KB * t)
    verdict = judge(_record(tmp_path, samples, profile=profile))
    assert _ids(verdict) == ["worker-memory-growth"]
    assert verdict.causes[0].score == th.SCORE_WORKERS_LOADER_BOUND
    assert any("80% of its samples" in e for e in verdict.causes[0].evidence)
    # The same growth without the waiting is below the bar.
    alone = judge(_record(tmp_path / "alone", samples))
    assert alone.causes == [] and any(
        "steadily: below what counts as growth" in line for line in alone.seen
    )


def test_a_main_process_starved_by_its_busy_workers(tmp_path):
    # Its threads queue 0.5 s a second for CPUs its two workers keep busy; nobody else competes.
    starved = _samples(worker_cpu=0.9, runqueue=0.5, worker_uss=lambda t: 10 * MB + 40 * KB * t)
    verdict = judge(_record(tmp_path / "starved", starved))
    assert _ids(verdict) == ["worker-memory-growth"]
    assert any("the workers take the cores it needs" in e for e in verdict.causes[0].evidence)
    # Flat workers: no cause, but it is said.
    flat = judge(_record(tmp_path / "flat", _samples(worker_cpu=0.9, runqueue=0.5)))
    assert flat.causes == [] and any("the workers take the cores it needs" in x for x in flat.seen)
    # The same queueing with other programs on the cores is theirs, not the workers'.
    busy = _samples(
        worker_cpu=0.9, runqueue=0.5, outside=0.4, worker_uss=lambda t: 10 * MB + 40 * KB * t
    )
    assert _ids(judge(_record(tmp_path / "busy", busy))) == ["machine-contention"]


def _round(t: float, main: list[Frame], worker: list[Frame]) -> dict:
    return {
        "t": t,
        "round": int(t),
        "processes": [
            {
                "pid": 100,
                "role": "main",
                "file": f"{int(t):02d}-main-100.txt",
                "active": False,
                "main_thread": [f.full() for f in main],
            },
            {
                "pid": 101,
                "role": "worker",
                "file": f"{int(t):02d}-worker-101.txt",
                "active": False,
                "main_thread": [f.full() for f in worker],
            },
        ],
    }


WAITING_MAIN = [
    Frame("select", f"{STDLIB}/selectors.py", 415),
    _dl("_MultiProcessingDataLoaderIter._try_get_data"),
    _dl("_BaseDataLoaderIter.__next__"),
    Frame("main", f"{PROJECT}/train.py", 9),
]
BLOCKED_WORKER = [
    Frame("Condition.wait", f"{STDLIB}/threading.py", 327),
    Frame("Event.wait", f"{STDLIB}/threading.py", 629),
    Frame("Rows.__getitem__", f"{PROJECT}/data.py", 68),
    Frame("fetch", f"{SITE}/torch/utils/data/_utils/fetch.py", 54),
    Frame("_worker_loop", f"{SITE}/torch/utils/data/_utils/worker.py", 374),
    Frame("main", f"{PROJECT}/train.py", 9),
]


def test_a_stall_names_the_process_everyone_waits_on(tmp_path):
    samples = _samples(main_cpu=0.0, worker_cpu=0.0)
    rounds = [_round(t, WAITING_MAIN, BLOCKED_WORKER) for t in (0, 10, 20, 30)]
    verdict = judge(_record(tmp_path, samples, rounds))
    assert _ids(verdict)[0] == "stall"
    assert verdict.headline.startswith("Stalled: no process of the run used CPU for 30 s")
    assert (
        "worker 101 is blocked in Rows.__getitem__ (data.py:68), waiting in Condition.wait"
        in verdict.headline
    )
    text = "\n".join(report_lines(verdict))
    assert "stacks at the end" in text and "Rows.__getitem__ (data.py:68)" in text
    assert (
        "waited for its workers" not in text
    )  # not "loading is the bottleneck" when nothing moves


def test_no_stall_when_the_stack_moves_or_the_idle_stretch_is_short(tmp_path):
    moving = [
        _round(t, WAITING_MAIN if t % 20 else WAITING_MAIN[1:], BLOCKED_WORKER)
        for t in (0, 10, 20, 30)
    ]
    assert (
        judge(
            _record(tmp_path / "moving", _samples(main_cpu=0.0, worker_cpu=0.0), moving)
        ).signals.stall
        is None
    )
    short = _record(tmp_path / "short", _samples(main_cpu=0.0, worker_cpu=0.0), stall_after=60.0)
    assert judge(short).signals.stall is None


def test_other_programs_load_is_named_only_when_the_run_queues_for_cpus(tmp_path):
    busy = judge(_record(tmp_path / "busy", _samples(outside=0.6, runqueue=0.8)))
    assert _ids(busy) == ["machine-contention"]
    assert "other programs used 60% of the machine's 2 cores" in busy.causes[0].evidence[0]
    assert busy.signals.attach_load == pytest.approx(
        0.05 / 2, abs=0.01
    )  # the attach's own CPU is not 'others'
    unhurt = judge(_record(tmp_path / "unhurt", _samples(outside=0.6, runqueue=0.0)))
    assert unhurt.causes == [] and "not held back" in unhurt.seen[0]


def test_oversubscribed_threads_are_named_on_a_quiet_machine_only(tmp_path):
    def threads(t, sample):
        return 40

    def kernel(t, sample):
        return 0.9 * t  # as much kernel time as user time in the main process

    quiet = judge(
        _record(tmp_path / "quiet", _samples(main_threads=threads, main_cpu_system=kernel))
    )
    assert "thread-oversubscription" in _ids(quiet)
    loaded = judge(
        _record(
            tmp_path / "loaded",
            _samples(main_threads=threads, main_cpu_system=kernel, outside=0.5, runqueue=0.5),
        )
    )
    assert "thread-oversubscription" not in _ids(loaded)


def test_paging_and_descriptors_that_only_rise(tmp_path):
    swapping = judge(_record(tmp_path / "swap", _samples(swap_in=lambda t, s: int(5 * MB * t))))
    assert (
        _ids(swapping) == ["memory-pressure"] and "back from swap" in swapping.causes[0].evidence[0]
    )
    fds = judge(_record(tmp_path / "fds", _samples(main_fds=lambda t, s: 20 + int(10 * t))))
    assert _ids(fds) == ["fd-leak"]


# -- what readers of records make of it ------------------------------------------------------------


def test_analyze_and_watch_say_nothing_about_epochs(tmp_path, capsys):
    directory = _record(tmp_path, _samples(worker_uss=lambda t: 10 * MB + 300 * KB * t))
    main(["analyze", str(directory)])
    out = capsys.readouterr().out
    assert "worker-memory-growth" in out and "epoch 1" not in out.lower().replace(
        "than the first", ""
    )
    assert (
        "cannot be judged from outside" in out
        and "dcnprobe run -- python train.py --workers 2" in out
    )
    assert json.loads((directory / "analysis.json").read_text())["ratio"] is None
    run = read_run(directory)
    assert run.batches.empty and len(run.samples) == 61 and set(run.workers["pid"]) == {101, 102}
    console = Console(record=True, width=200)
    state = watch(directory, console, exit_at_end=True, live=False, sleep=lambda s: None)
    assert state.epochs == {}
    assert "attach ended after 30 s" in console.export_text()


def test_every_cause_is_judged_from_outside_or_said_to_need_batch_times():
    from dcnprobe.analysis import CAUSE_IDS
    from dcnprobe.outside.verdict import NEEDS_BATCH_TIMES, RULES

    judged, needs = set(RULES), set(NEEDS_BATCH_TIMES)
    assert judged | needs | {"none"} == set(CAUSE_IDS) and not judged & needs
    assert all(
        RULES[cause](OutsideSignals()) is None for cause in judged
    )  # nothing measured: nothing named


def test_a_record_of_the_probe_with_no_batch_claims_no_epoch(tmp_path):
    """Not an attach from outside: a run that ended before its first batch."""
    from dcnprobe.analysis import analyze_run

    writer = RunWriter(tmp_path)
    writer.write(
        "header", {"schema": 1, "pid": 1, "argv": ["train.py"], "environment": {"cpu_count": 2}}
    )
    writer.write_footer("crashed", t=1.0, epochs=0, steps=0)
    verdict = analyze_run(tmp_path).verdict
    assert verdict.startswith("No batch was recorded") and "epoch" not in verdict


def test_the_progress_line_says_what_each_process_does_now():
    from dcnprobe.outside.observe import progress_line

    samples = _samples(seconds=10, worker_uss=lambda t: 10 * MB + 300 * KB * t, outside=0.5)
    line = progress_line(samples, 10.0, 30.0, uss=True)
    assert line.startswith(
        "attach 10/30 s: main 90% CPU; 2 worker(s) 50% 50% CPU, 26 MB USS (+0.59 MB/s)"
    )
    assert line.endswith("other programs 1.0 cores")
    replaced = _samples(seconds=10, workers=(201, 202))
    assert "2 new worker(s)" in progress_line(samples[:-1] + replaced[-1:], 10.0, 30.0, uss=True)


def test_duration_option():
    parse = Duration().convert
    assert [parse(v, None, None) for v in ("30s", "2m", "90", "1.5h", " 3 s")] == [
        30,
        120,
        90,
        5400,
        3,
    ]
    for bad in ("soon", "0.5s", "-3"):
        with pytest.raises(Exception, match="duration|shorter"):
            parse(bad, None, None)


def test_a_process_that_is_not_python_is_one_line_and_exit_2(capsys):
    # The other bad PIDs and options are in tests/test_cli_errors.py's table.
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(SystemExit) as exited:
            main(["attach", str(sleeper.pid), "--for", "2s"])
    finally:
        sleeper.kill()
        sleeper.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(err) == 1 and "is not a Python process" in err[0]


# -- one real attach -------------------------------------------------------------------------------


@pytest.mark.slow  # a real 2.5 s window on a real run: 9 s; the default suite judges the rules on records
def test_attach_to_a_real_run_with_a_worker_leak(tmp_path):
    """A training script started without dcnprobe, with persistent DataLoader workers that
    keep every sample they serve; attached through one of its workers for 2.5 s."""
    with training(tmp_path, *LEAKING_WORKERS) as run:
        worker = workers_of(run.pid)[0]
        lines = []
        started = time.monotonic()
        observation = Observer(
            AttachSettings(
                pid=worker, out=tmp_path / "attach", window_s=2.5, interval_s=0.25, pyspy_rate=20
            ),
            say=lines.append,
        ).run()
        took = time.monotonic() - started
    verdict = judge(observation.directory)
    write_verdict(verdict)
    assert observation.target.main_pid == run.pid and observation.target.given_role == WORKER
    assert sorted(verdict.signals.worker_pids) == workers_of_record(observation.directory)
    assert "worker-memory-growth" in _ids(verdict), report_lines(verdict)
    assert "stall" not in _ids(verdict)
    assert verdict.signals.workers_rate > th.WORKER_RATE_MIN
    assert took < 2.5 + 5  # the window, then py-spy's summary
    header = read_run(observation.directory).header
    assert header["attached"] == "pid" and header["boundaries"] == rec.NO_BOUNDARIES


def workers_of_record(directory) -> list[int]:
    return sorted(read_run(directory).workers["pid"].unique().tolist())
