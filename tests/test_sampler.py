"""The sampler's machine and process fields: outside-load input, clock, descriptors."""

import subprocess
import sys
import time

import psutil
import pytest

from dcnprobe import machine_load, processes
from dcnprobe.processes import ProcessReader
from dcnprobe.sampler import MAX_STRETCH, MIN_EPOCH_SAMPLES, SAMPLER_CPU_SHARE, MemorySampler


def sample(**kwargs):
    return MemorySampler(lambda record: None, **kwargs).sample()


@pytest.mark.skipif(not machine_load.PROC_STAT.exists(), reason="needs Linux /proc/stat")
def test_a_sample_records_the_machine_busy_time():
    first, second = sample(), sample()
    assert isinstance(first["machine_busy_s"], float)
    assert second["machine_busy_s"] >= first["machine_busy_s"]


def test_machine_busy_time_is_none_off_linux(monkeypatch, tmp_path):
    monkeypatch.setattr(machine_load, "PROC_STAT", tmp_path / "missing")
    assert sample()["machine_busy_s"] is None


def test_cpu_frequency_is_none_where_psutil_cannot_read_it(monkeypatch):
    monkeypatch.setattr(psutil, "cpu_freq", lambda: None)
    assert sample()["cpu_freq_mhz"] is None

    def unsupported():
        raise NotImplementedError

    monkeypatch.setattr(psutil, "cpu_freq", unsupported)
    assert processes.cpu_frequency_mhz() is None


@pytest.mark.skipif(not hasattr(psutil.Process, "num_fds"), reason="no descriptor count on this platform")
def test_open_descriptors_are_counted_for_main_and_workers(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'w'); time.sleep(30)",
                              str(tmp_path / "held")])
    try:
        held = tmp_path / "held"
        deadline = time.monotonic() + 10
        while not held.exists() and time.monotonic() < deadline:  # the child opens it as it starts
            time.sleep(0.01)
        record = sample(reader=ProcessReader())
        assert record["main_fds"] >= 3
        (worker,) = [w for w in record["workers"] if w["pid"] == child.pid]
        assert worker["fds"] >= 4 and worker["threads"] >= 1 and "ctx_involuntary" in worker
    finally:
        child.kill()
        child.wait()


def test_outside_share_is_the_busy_time_less_our_own_over_all_cores():
    assert machine_load.outside_share(busy_s=15.0, own_s=5.0, wall_s=10.0, cores=2) == pytest.approx(0.5)
    assert machine_load.outside_share(busy_s=4.0, own_s=5.0, wall_s=10.0, cores=2) == 0.0  # accounting noise
    assert machine_load.outside_share(busy_s=1.0, own_s=0.0, wall_s=0.0, cores=2) is None


def test_a_worker_started_for_the_next_epoch_is_filed_under_that_epoch():
    """A real child process started when the loop moves to epoch 2 (as a non-persistent
    DataLoader starts its workers after the epoch begins): whenever the sample sees it,
    the sample says epoch 2. The loop's position is read after the workers are listed."""
    position = {"epoch": 1}
    child = None

    class StartsAWorkerWhenListed(ProcessReader):
        def child_pids(self, full=True):
            nonlocal child
            if child is None:  # the loop enters epoch 2 and starts its worker
                position["epoch"] = 2
                child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
                time.sleep(0.2)
            return super().child_pids(full)

    try:
        record = MemorySampler(lambda record: None, context=lambda: dict(position),
                               reader=StartsAWorkerWhenListed()).sample()
        assert [w["pid"] for w in record["workers"]] == [child.pid] and record["epoch"] == 2
    finally:
        child.kill()
        child.wait()


def test_the_probes_own_helper_is_the_runs_cpu_not_outside_load(tmp_path):
    """The early warning runs its analysis in a child process (not a DataLoader worker):
    while it runs (epoch 2) its CPU counts as the run's, and when it is reaped (epoch 3)
    the reaped-children figure does not count it twice. The machine is busy with the run
    alone, so outside load is zero in every epoch."""
    from dcnprobe.analysis.signals.epochs import _sampled_epochs
    from dcnprobe.records import SCHEMA_VERSION, RunWriter
    from dcnprobe.runs import read_run

    writer = RunWriter(tmp_path, flush_every_s=0.0)
    writer.write("header", {"schema": SCHEMA_VERSION, "environment": {"cpu_count": 2}, "device": "cpu"})
    main_cpu = busy = helper_total = helper_ended = reaped = 0.0
    helper = 0.0  # the live helper's CPU so far
    for tick in range(1, 31):
        epoch = 1 + (tick - 1) // 10
        main_cpu += 0.5  # half a core for the loop itself, every 0.5 s tick
        step_busy = 0.5
        if 16 <= tick <= 20:  # the helper runs through the last 2.5 s of epoch 2
            helper += 0.4
            step_busy += 0.4
        if tick == 21:  # it ends, and is reaped, in epoch 3
            helper_ended, reaped, helper = helper_ended + helper, reaped + helper, 0.0
        helper_total = helper_ended + helper
        busy += step_busy
        writer.write("memory", {"t": tick * 0.5, "epoch": epoch, "main_cpu_user": main_cpu, "main_cpu_system": 0.0,
                                "main_cpu_children": reaped, "machine_busy_s": busy, "helpers_cpu_s": helper_total,
                                "helpers_ended_cpu_s": helper_ended, "workers": []})
    writer.close()
    epochs = _sampled_epochs(read_run(tmp_path))
    assert {e: round(s.outside_load, 3) for e, s in epochs.items()} == {1: 0.0, 2: 0.0, 3: 0.0}


class _CountingReader(ProcessReader):
    """The real reader of this process, each USS read said to cost `uss_cpu` CPU seconds."""

    def __init__(self, cpu: list[float], uss_cpu: float) -> None:
        super().__init__()
        self.cpu, self.uss_cpu, self.uss_reads = cpu, uss_cpu, {}

    def stats(self, pid, with_uss):
        if with_uss:
            self.uss_reads[pid] = self.uss_reads.get(pid, 0) + 1
            self.cpu[0] += self.uss_cpu
        return super().stats(pid, False)


def test_the_main_process_uss_walks_keep_within_their_share_of_a_core():
    """A main process whose USS walk costs 14 ms is walked every 28 s (USS_CPU_SHARE 0.05%),
    not every 4 s (at the first 4 s tick after 28 s have passed); a cheap walk keeps the
    tick cadence; the run's last sample reads it anyway. A worker's USS, the only sign of
    its copy-on-write growth, keeps the tick cadence however dear."""
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        now, cpu = [0.0], [0.0]
        for uss_cpu, expected in ((0.014, [4, 32]), (0.001, [4, 8, 12, 16, 20, 24, 28, 32, 36, 40])):
            reader = _CountingReader(cpu, uss_cpu)
            main = reader.pid
            sampler = MemorySampler(lambda record: None, reader=reader, clock=lambda: now[0], cpu_clock=lambda: cpu[0])
            main_reads = []
            for tick in range(1, 81):  # 40 s of 0.5 s ticks, USS due every 8th
                now[0] = tick * sampler.interval
                before = reader.uss_reads.get(main, 0)
                record = sampler.sample(with_uss=tick % sampler.uss_every == 0, periodic=True)
                if reader.uss_reads.get(main, 0) > before:
                    main_reads.append(now[0])
            assert [w["pid"] for w in record["workers"]] == [worker.pid]
            assert main_reads == expected, uss_cpu
            assert reader.uss_reads[worker.pid] == 10  # every 4 s
            before = reader.uss_reads[main]
            sampler.sample(with_uss=True)
            assert reader.uss_reads[main] == before + 1
    finally:
        worker.kill()
        worker.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_proc_reader_agrees_with_psutil(monkeypatch):
    """The sampler's direct /proc reads give what psutil gives, for this process and a child."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        for pid in (ProcessReader().pid, child.pid):
            direct = ProcessReader().stats(pid, with_uss=True)
            with monkeypatch.context() as m:
                m.setattr(processes, "_IS_LINUX", False)
                through_psutil = ProcessReader().stats(pid, with_uss=True)
            through_psutil.update(processes.page_faults(psutil.Process(pid)))  # /proc/PID/stat on Linux
            assert direct.keys() == through_psutil.keys()
            for key in ("threads", "fds", "majflt"):
                assert direct[key] == through_psutil[key], key
            for key in ("rss", "uss"):
                assert abs(direct[key] - through_psutil[key]) <= 0.05 * through_psutil[key], key
            for key in ("cpu_user", "cpu_system", "cpu_children"):
                assert abs(direct[key] - through_psutil[key]) <= 0.05, key
            assert 0 <= through_psutil["ctx_involuntary"] - direct["ctx_involuntary"] <= 50
            assert 0 <= through_psutil["minflt"] - direct["minflt"] <= 5000
        child.kill()
        child.wait()
        assert ProcessReader().stats(child.pid, with_uss=False) is None  # gone: None, as psutil's
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_system_memory_read_directly_agrees_with_psutil():
    direct = processes._proc_system_memory()
    vm, swap = psutil.virtual_memory(), psutil.swap_memory()
    assert abs(direct["sys_available"] - vm.available) <= 0.05 * vm.available
    assert (direct["swap_used"], direct["swap_in"], direct["swap_out"]) == (swap.used, swap.sin, swap.sout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_children_of_other_threads_are_found_by_the_full_look_and_kept_after():
    """Between full looks the reader reads only the main thread's children and those of
    threads seen forking: a child started from another thread shows at the next full look,
    and from then on at every look."""
    import threading

    reader = ProcessReader()
    started, stop, box = threading.Event(), threading.Event(), {}

    def start_a_child():
        box["child"] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        started.set()
        stop.wait(30)

    thread = threading.Thread(target=start_a_child)
    thread.start()
    started.wait(10)
    from_main = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        from_thread = box["child"].pid
        partial = reader.child_pids(full=False)
        assert from_main.pid in partial and from_thread not in partial
        assert {from_main.pid, from_thread} <= set(reader.child_pids(full=True))
        assert {from_main.pid, from_thread} <= set(reader.child_pids(full=False))
    finally:
        for child in (from_main, box["child"]):
            child.kill()
            child.wait()
        stop.set()
        thread.join()


def test_a_default_interval_lengthens_in_a_long_epoch_to_keep_the_sampler_within_its_share(tmp_path):
    """Ticks of 1.5 ms CPU: 0.5 s apart until the epoch under way has had MIN_EPOCH_SAMPLES
    samples' worth of time (a short epoch keeps two a second), then lengthening with the
    epoch, up to 1.5 s (0.1% of a core); cheap ticks keep 0.5 s, dear ones stop at
    MAX_STRETCH times it; an interval the user set is kept, however dear."""
    def waits(sampler, tick_cpu, epoch_running):
        return [sampler.next_wait(tick_cpu, running) for running in epoch_running]

    first_10_s = [i * 0.5 for i in range(21)]
    assert set(waits(MemorySampler(print), 0.0015, first_10_s)) == {0.5}
    assert waits(MemorySampler(print), 0.0015, [10, 15, 20, 25]) == [0.5, 0.75, 1.0, 1.25]
    assert waits(MemorySampler(print), 0.0015, [60] * 20)[-1] == pytest.approx(0.0015 / SAMPLER_CPU_SHARE) == 1.5
    assert set(waits(MemorySampler(print), 0.0004, [60] * 20)) == {0.5}
    assert waits(MemorySampler(print), 0.05, [600] * 20)[-1] == MAX_STRETCH * 0.5
    assert set(waits(MemorySampler(print, interval=0.2, budgeted=False), 0.05, [600] * 20)) == {0.2}
    assert 10 / MIN_EPOCH_SAMPLES == 0.5
    # The probe's own default is budgeted; an interval given, to the Probe or from a launch, is not.
    from dcnprobe.contract import AttachConfig
    from dcnprobe.launched import apply_launch
    from dcnprobe.probe import Probe

    assert Probe(tmp_path).sampler.budgeted and not Probe(tmp_path, sample_interval=0.5).sampler.budgeted
    launched = Probe(tmp_path)
    apply_launch(launched, AttachConfig(run_dir=str(tmp_path), sample_interval=0.3))
    assert not launched.sampler.budgeted and launched.sampler.interval == 0.3


def test_the_sampling_thread_times_the_epoch_under_way_from_its_first_sample():
    """The thread hands next_wait how long the epoch its samples carry has been sampled:
    growing within an epoch, from 0 again when the loop's epoch changes."""
    now, seen = [0.0], []

    def clock():
        now[0] += 1.0  # every reading a second later: the thread's own timing, made visible
        return now[0]

    class Recording(MemorySampler):
        def next_wait(self, tick_cpu, epoch_running):
            seen.append(epoch_running)
            if len(seen) == 8:
                self._stop.set()
            return 0.001

    epochs = iter([1, 1, 1, 2, 2, 2, 2, 3])
    sampler = Recording(lambda record: None, interval=0.001, clock=clock, context=lambda: {"epoch": next(epochs)})
    sampler.sample = lambda with_uss, periodic: {"t": clock(), **sampler.context()}
    sampler.start()
    sampler._thread.join(timeout=10)
    growing = [b - a for a, b in zip(seen, seen[1:])]
    assert seen[0] == 0 and seen[3] == 0 and seen[7] == 0
    assert all(step > 0 for i, step in enumerate(growing) if i + 1 not in (3, 7))


def test_the_slow_figures_are_read_every_few_ticks_at_each_epochs_first_and_at_the_last_sample():
    """The CPU clock and Python's block count (dear to read, slow to change) come every
    SLOW_EVERY-th tick and at the first tick of each epoch; the run's last sample has them."""
    from dcnprobe.sampler import SLOW_EVERY

    epoch = [1]
    sampler = MemorySampler(lambda record: None, context=lambda: {"epoch": epoch[0]})
    read = []
    for tick in range(1, 3 * SLOW_EVERY + 1):
        if tick == SLOW_EVERY + 2:
            epoch[0] = 2
        sampler._ticks = tick
        record = sampler.sample(with_uss=False, periodic=True)
        assert ("py_blocks" in record) == ("cpu_freq_mhz" in record)
        if "py_blocks" in record:
            read.append(tick)
    assert read == [1, SLOW_EVERY, SLOW_EVERY + 2, 2 * SLOW_EVERY, 3 * SLOW_EVERY]
    sampler._ticks = 1
    assert "py_blocks" in sampler.sample(with_uss=True) and "cpu_freq_mhz" in sampler.sample(with_uss=True)


def test_the_stop_signal_waits_out_its_timeout_unset_and_returns_at_once_when_set():
    import threading

    from dcnprobe.sampler import StopSignal

    stop = StopSignal()
    began = time.perf_counter()
    assert not stop.wait(0.05) and time.perf_counter() - began >= 0.045 and not stop.is_set()
    threading.Timer(0.05, stop.set).start()
    began = time.perf_counter()
    assert stop.wait(10) and time.perf_counter() - began < 5
    assert stop.is_set() and stop.wait(10) and stop.wait(0)  # stays set
    stop.set()  # twice: no error
    stop.clear()
    assert not stop.is_set() and not stop.wait(0.01)
    stop.clear()  # twice: still clear
    assert not stop.wait(0.01)
