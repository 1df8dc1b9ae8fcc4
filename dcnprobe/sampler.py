"""Background memory sampler: the main process, every DataLoader worker, the system,
the device allocator, glibc's allocator and the Python heap, at a fixed interval; also
the machine's busy CPU time (for other processes' load) and the CPU clock frequency.

It runs in a daemon thread and emits flat dict records (see dcnprobe.records). Samples
come every `interval` seconds (0.5 by default). A long epoch needs fewer: the analysis
judges each epoch on its samples (contention, memory growth), and MIN_EPOCH_SAMPLES of
them serve it as well as a hundred. So a default interval lengthens, up to MAX_STRETCH
times, once the epoch under way has run long enough to have that many, and only as far
as keeps the thread's own CPU within SAMPLER_CPU_SHARE of a core: every tick's /proc
reads are taken from the loop's cores. Short epochs (a test's, a bisect trial's) keep
two samples a second. An interval set by the user is kept as set. RSS is
read every tick; USS, which costs the kernel a page-table walk (about 10 ms for a process
mapping the 2.1 M-row store, 14 ms for one with torch and a 64 MB tensor), every
`uss_every` ticks (4 s at the default interval). The main process's USS is read no more often than
keeps its walks within USS_CPU_SHARE of a core (a 14 ms walk every 28 s): its memory
growth is judged on the per-batch RSS and allocator figures first. The workers' USS keeps
the tick cadence: a forked worker's private growth (copy-on-write) shows in nothing else.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from dcnprobe import glibc
from dcnprobe.gcwatch import GcWatch
from dcnprobe.machine_load import machine_busy_seconds
from dcnprobe.processes import ProcessReader, cpu_frequency_mhz, system_memory

DEFAULT_INTERVAL = 0.5
DEFAULT_USS_EVERY = 8
FULL_SCAN_EVERY = 8  # ticks between looks at every thread's children (ProcessReader.child_pids)
USS_CPU_SHARE = 0.0005  # of one core: what the main process's USS walks may cost
SAMPLER_CPU_SHARE = 0.001  # of one core: what the ticks may cost in a long epoch
MIN_EPOCH_SAMPLES = 20  # a lengthened interval still gives the epoch under way this many
MAX_STRETCH = 4.0  # a budgeted interval lengthens to at most this multiple
TICK_CPU_WEIGHT = 0.2  # of the latest tick, in the running mean of a tick's CPU
# Ticks between readings of the figures that change slowly against a tick and cost much
# to read: the CPU clock (psutil parses /proc/cpuinfo, 60-200 us) and Python's allocated
# blocks (a walk of every pymalloc arena, 30-400 us). Also read at an epoch's first tick,
# so that every epoch has its own, and at the run's last sample.
SLOW_EVERY = 4


class MemorySampler:
    def __init__(
        self,
        emit: Callable[[dict[str, Any]], None],
        *,
        interval: float = DEFAULT_INTERVAL,
        uss_every: int = DEFAULT_USS_EVERY,
        device_memory: Callable[[], dict[str, int]] = dict,
        context: Callable[[], dict[str, Any]] = dict,
        gc_watch: GcWatch | None = None,
        live_tensors: bool = False,
        reader: ProcessReader | None = None,
        clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] = time.thread_time,
        budgeted: bool = True,
    ) -> None:
        if interval <= 0:
            raise ValueError("sample interval must be positive")
        self.emit, self.interval, self.uss_every = emit, interval, max(1, uss_every)
        self.device_memory, self.context, self.gc_watch = device_memory, context, gc_watch
        self.live_tensors, self.clock, self.cpu_clock = live_tensors, clock, cpu_clock
        self._main_uss_next = -1.0  # when the main process's USS may be read again (the budget)
        self.reader = reader or ProcessReader()
        self.worker_pids: list[int] = []
        self._helper_cpu: dict[int, float] = {}  # the probe's own helpers alive at the last sample
        self._helpers_ended = 0.0  # their CPU when last seen, for those that have ended since
        self.budgeted = budgeted  # the interval may lengthen (a default, not the user's)
        self._tick_cpu: float | None = None  # running mean of a tick's CPU seconds
        self._ticks = 0
        self._slow_epoch: Any = None  # the epoch of the last reading of the SLOW_EVERY figures
        self._stop = StopSignal()
        self._thread: threading.Thread | None = None

    def sample(self, with_uss: bool = True, periodic: bool = False) -> dict[str, Any]:
        """One record. periodic (the thread's ticks): the main process's USS only within
        its budget, every thread's children only every FULL_SCAN_EVERY ticks; otherwise
        (the run's last sample) USS for all when with_uss, and every thread looked at."""
        reader = self.reader
        # The workers first, then the loop's position: a worker started for the next epoch
        # then always carries that epoch. The other way round, the slow reads in between
        # (USS walks page tables) let a new epoch's workers be filed under the last epoch.
        # Every thread's children every FULL_SCAN_EVERY ticks, and on a call from outside
        # the thread (the run's last sample); in between, the threads known to fork.
        children = reader.child_pids(full=not periodic or self._ticks % FULL_SCAN_EVERY == 0)
        pids = reader.worker_pids(children)
        context = self.context()
        record: dict[str, Any] = {"t": self.clock(), **context}
        main = self._main_stats(with_uss, periodic) or {}
        record.update({f"main_{k}": v for k, v in main.items()})
        record.update(system_memory())
        # Machine-wide busy CPU-seconds: less our own CPU (main + workers, below), the
        # analysis gets the load of other processes, so that contention is not blamed on code.
        record["machine_busy_s"] = machine_busy_seconds()
        record.update(self._helpers())
        if reader.job_root is not None:  # a rank: its sibling ranks' CPU is the job's
            record["job_cpu_s"] = reader.job_cpu_seconds()
        epoch = context.get("epoch")
        if not periodic or self._ticks % SLOW_EVERY == 0 or epoch != self._slow_epoch:
            self._slow_epoch = epoch
            record["cpu_freq_mhz"] = cpu_frequency_mhz()
            record["py_blocks"] = sys.getallocatedblocks()
        record.update({f"device_{k}": v for k, v in self.device_memory().items()})
        malloc = glibc.mallinfo()
        if malloc:
            record.update({f"malloc_{k}": v for k, v in malloc.items()})
        if self.gc_watch is not None:
            record.update(self.gc_watch.snapshot())
        if self.live_tensors:
            record["live_tensors"] = _count_tensors()
        reader.forget_others(pids)
        self.worker_pids = pids
        workers = []
        for pid in pids:
            stats = reader.stats(pid, with_uss)
            if stats is not None:
                workers.append({"pid": pid, **stats})
        record["workers"] = workers
        return record

    def _main_stats(self, with_uss: bool, periodic: bool) -> dict[str, Any] | None:
        pid = self.reader.pid
        if with_uss and periodic and self.clock() < self._main_uss_next:
            with_uss = False
        if not with_uss:
            return self.reader.stats(pid, False)
        began, cpu_began = self.clock(), self.cpu_clock()
        stats = self.reader.stats(pid, True)
        self._main_uss_next = began + (self.cpu_clock() - cpu_began) / USS_CPU_SHARE
        return stats

    def _helpers(self) -> dict[str, float]:
        """The probe's own helper processes (the early warning's analysis): their CPU is the
        run's, not outside load, while they run, though not DataLoader workers'. Two rising
        counters: all of it (live helpers now, ended ones as last seen), and the ended part,
        which the reaped-children figure repeats once they are reaped."""
        live = self.reader.helper_cpu()
        self._helpers_ended += sum(cpu for pid, cpu in self._helper_cpu.items() if pid not in live)
        self._helper_cpu = live
        return {"helpers_cpu_s": self._helpers_ended + sum(live.values()), "helpers_ended_cpu_s": self._helpers_ended}

    def start(self) -> None:
        """Start (or restart after stop) the sampling thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dcnprobe-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def next_wait(self, tick_cpu: float, epoch_running: float) -> float:
        """Seconds until the next tick, given the last tick's CPU seconds and how long the
        epoch under way has been sampled."""
        mean = self._tick_cpu
        self._tick_cpu = mean = tick_cpu if mean is None else mean + TICK_CPU_WEIGHT * (tick_cpu - mean)
        if not self.budgeted:
            return self.interval
        longest = min(MAX_STRETCH * self.interval, epoch_running / MIN_EPOCH_SAMPLES)
        return max(self.interval, min(longest, mean / SAMPLER_CPU_SHARE))

    def _run(self) -> None:
        epoch, epoch_began, wait = None, self.clock(), self.interval
        while not self._stop.wait(wait):
            self._ticks += 1
            cpu = self.cpu_clock()
            try:
                record = self.sample(with_uss=self._ticks % self.uss_every == 0, periodic=True)
            except Exception as exc:  # a sampling failure must never kill the training run
                record = {"t": self.clock(), "sampler_error": f"{type(exc).__name__}: {exc}", "workers": []}
            self.emit(record)
            now = self.clock()
            if record.get("epoch") != epoch:
                epoch, epoch_began = record.get("epoch"), now
            wait = self.next_wait(self.cpu_clock() - cpu, now - epoch_began)


class StopSignal:
    """threading.Event's set, clear and wait, for one waiting thread: a lock held while
    running, let go by set(). A wait is one acquire, where Event.wait builds a Condition's
    waiter in Python every time: the sampler waits once a tick."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # already set
            self._lock.release()

    def clear(self) -> None:
        self._lock.acquire(blocking=False)

    def is_set(self) -> bool:
        return not self._lock.locked()

    def wait(self, timeout: float) -> bool:
        """True once set (at once if it is), False after `timeout` seconds unset."""
        if self._lock.acquire(timeout=timeout):
            self.set()
            return True
        return False


def _count_tensors() -> int:
    import torch

    return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))
