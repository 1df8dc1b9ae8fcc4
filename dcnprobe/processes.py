"""Memory and CPU figures for the training process and its DataLoader workers.

Workers are the child processes running the same Python executable (forked or
spawned); helpers the probe starts itself are not: a py-spy (another executable), or a
Python child started with `run_helper` (the early warning's analysis). RSS is cheap
(one small /proc read); USS needs the kernel to walk page tables (milliseconds for a
large process), so the sampler reads it less often.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import psutil

from dcnprobe import procfs

_IS_LINUX = sys.platform.startswith("linux")
_PAGE_SIZE = resource.getpagesize()
_HELPERS: set[int] = set()  # this process's own helper children: never counted as workers


def run_helper(argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
               ) -> subprocess.CompletedProcess:
    """Run a helper process of the probe's own to its end, its output captured. While it
    runs it is a child of the training process, but not one of its DataLoader workers."""
    child = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=None if env is None else dict(env))
    _HELPERS.add(child.pid)
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        raise
    finally:
        _HELPERS.discard(child.pid)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


class ProcessReader:
    """Caches psutil handles; every read of a vanished process returns None."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid or os.getpid()
        self.me = psutil.Process(self.pid)
        self._exe = _safe(self.me.exe)
        self._handles: dict[int, psutil.Process] = {}
        # A rank of a distributed job: the launcher whose other children (the other ranks,
        # their workers) are the job's own load on this machine, not someone else's.
        self.job_root: int | None = None
        self._job_handles: dict[int, psutil.Process] = {}
        self._forking_tids: set[int] = {self.pid}  # threads seen with children (child_pids)

    def job_cpu_seconds(self) -> float | None:
        """CPU seconds of the job's other processes: the launcher's tree less this
        process's own (reaped children included, so that a worker's CPU stays counted after
        it ends). None without a job, or when the launcher is gone."""
        others = self._job_processes()
        if others is None:
            return None
        total = 0.0
        for proc in others:
            try:
                cpu = proc.cpu_times()
            except psutil.Error:
                continue
            total += cpu.user + cpu.system + getattr(cpu, "children_user", 0.0) + getattr(cpu, "children_system", 0.0)
        return total

    def job_pids(self) -> list[int]:
        """The job's other processes (other ranks and their workers), the launcher left out."""
        others = self._job_processes() or []
        return [proc.pid for proc in others if proc.pid != self.job_root]

    def _job_processes(self) -> list[psutil.Process] | None:
        """The launcher and its descendants, this process's own subtree left out (not
        descended into: walked from the launcher down, no scan of every process)."""
        if self.job_root is None:
            return None
        found, todo, known = [], [self.job_root], self._job_handles
        while todo:
            pid = todo.pop()
            if pid == self.pid:
                continue
            proc = known.get(pid)
            if proc is None:
                try:
                    proc = known[pid] = psutil.Process(pid)
                except psutil.Error:
                    if pid == self.job_root:
                        return None  # the launcher is gone
                    continue
            found.append(proc)
            todo += _children_of(proc)
        self._job_handles = {proc.pid: proc for proc in found}
        return found

    def worker_pids(self, children: list[int] | None = None) -> list[int]:
        """children: this process's child pids, when just read (the sampler reads them once a tick)."""
        pids = []
        for pid in self.child_pids() if children is None else children:
            if pid in _HELPERS:
                continue
            proc = self.handle(pid)
            if proc is not None and (self._exe is None or _safe(proc.exe) == self._exe):
                pids.append(pid)
        return sorted(pids)

    def child_pids(self, full: bool = True) -> list[int]:
        """This process's children. full=False (Linux): only the children of threads seen
        forking before and of the main thread (where DataLoader workers are started): an
        open and a read per thread is the dearest part of a sample, and a process has many
        threads that never fork. The sampler scans all of them every few ticks."""
        if not _IS_LINUX or full:
            pids, forking = _children_by_thread(self.me)
            self._forking_tids |= forking
            return pids
        pids = []
        for tid in list(self._forking_tids):
            try:
                pids += _thread_children(self.pid, tid)
            except OSError:
                if tid != self.pid:
                    self._forking_tids.discard(tid)  # the thread has ended
        return pids

    def helper_cpu(self) -> dict[int, float]:
        """CPU seconds so far of each of this process's own helpers alive now (run_helper
        knows their pids: no look at the children needed)."""
        found = {}
        for pid in list(_HELPERS):
            if (proc := self.handle(pid)) is not None:
                with contextlib.suppress(psutil.Error):
                    cpu = proc.cpu_times()
                    found[pid] = cpu.user + cpu.system
        return found

    def handle(self, pid: int) -> psutil.Process | None:
        proc = self._handles.get(pid)
        if proc is None:
            try:
                proc = self._handles[pid] = psutil.Process(pid)
            except psutil.Error:
                return None
        return proc

    def forget_others(self, keep: list[int]) -> None:
        for pid in list(self._handles):
            if pid not in keep and pid != self.pid:
                del self._handles[pid]
                procfs.forget_process(pid)

    def rss(self, pid: int) -> int | None:
        proc = self.handle(pid)
        info = _safe(proc.memory_info) if proc else None
        return info.rss if info else None

    def uss(self, pid: int) -> int | None:
        proc = self.handle(pid)
        info = _safe(proc.memory_full_info) if proc else None
        return getattr(info, "uss", None)

    def stats(self, pid: int, with_uss: bool) -> dict[str, Any] | None:
        """rss, uss (or None), threads, CPU seconds, involuntary switches, open file
        descriptors (None where the platform has no count), page faults."""
        if _IS_LINUX:
            stats = _proc_stats(pid)
            if stats is None:
                return None
            if stats:
                if with_uss:
                    proc = self.handle(pid)
                    stats["uss"] = getattr(_safe(proc.memory_full_info) if proc else None, "uss", None)
                else:
                    stats["uss"] = None
                return stats
        proc = self.handle(pid)
        if proc is None:
            return None
        try:
            with proc.oneshot():
                memory = proc.memory_info()
                cpu = proc.cpu_times()
                stats = {
                    "rss": memory.rss,
                    "threads": proc.num_threads(),
                    "cpu_user": cpu.user,
                    "cpu_system": cpu.system,
                    # CPU of children this process has reaped: DataLoader workers, once
                    # joined. Without it, a worker's last moments vanish with it and pass
                    # for someone else's load (see analysis.signals).
                    "cpu_children": getattr(cpu, "children_user", 0.0) + getattr(cpu, "children_system", 0.0),
                    "ctx_involuntary": proc.num_ctx_switches().involuntary,
                    "fds": open_fds(proc),
                }
                stats.update(page_faults(proc, memory))
            stats["uss"] = proc.memory_full_info().uss if with_uss else None
        except psutil.Error:
            return None
        return stats


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stats(pid: int) -> dict[str, Any] | None:
    """The sampler's per-tick figures from /proc/PID/stat and status read directly (man 5
    proc): a third of what psutil's five reads cost, which the sampler pays every tick for
    every process. None: the process is gone; {}: not readable here (psutil instead)."""
    try:
        stat = procfs.read(f"/proc/{pid}/stat")
        status = procfs.read(f"/proc/{pid}/status")
    except (FileNotFoundError, ProcessLookupError):
        procfs.forget_process(pid)
        return None
    except OSError:
        return {}
    try:
        fds: int | None = len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return None
    except OSError:
        fds = None
    try:
        # Fields after the ')' that closes the command name; field N of the man page is
        # at N - 3: minflt 10, majflt 12, utime 14, stime 15, cutime 16, cstime 17,
        # num_threads 20, rss 24 (pages).
        f = stat.rsplit(b")", 1)[1].split()
        involuntary = int(status.split(b"nonvoluntary_ctxt_switches:", 1)[1].split(None, 1)[0])
        return {"rss": int(f[21]) * _PAGE_SIZE, "threads": int(f[17]), "cpu_user": int(f[11]) / _CLOCK_TICKS,
                "cpu_system": int(f[12]) / _CLOCK_TICKS, "cpu_children": (int(f[13]) + int(f[14])) / _CLOCK_TICKS,
                "ctx_involuntary": involuntary, "fds": fds, "minflt": int(f[7]), "majflt": int(f[9])}
    except (IndexError, ValueError):
        return {}


def _thread_children(pid: int, tid: int, keep: bool = True) -> list[int]:
    """The children one thread of process `pid` started (Linux); OSError if it is gone.
    keep: through a descriptor kept open (the threads read every tick, which are few);
    a look at every thread opens and closes, or each thread that ever ran would keep one
    (a pin-memory thread an epoch: a descriptor count rising with the epochs, which the
    analysis reads as a leak of the loop's)."""
    path = f"/proc/{pid}/task/{tid}/children"
    if keep:
        return [int(p) for p in procfs.read(path).split()]
    with open(path, "rb") as f:
        return [int(p) for p in f.read().split()]


def _children_of(proc: psutil.Process) -> list[int]:
    return _children_by_thread(proc)[0]


def _children_by_thread(proc: psutil.Process) -> tuple[list[int], set[int]]:
    """A process's children, and the threads that started them. Linux lists each thread's
    children in /proc: 30 us, where psutil scans every process on the machine (over a
    millisecond). Elsewhere, psutil (and no threads)."""
    if _IS_LINUX:
        try:
            pids: list[int] = []
            forking: set[int] = set()
            for tid in os.listdir(f"/proc/{proc.pid}/task"):
                found = _thread_children(proc.pid, int(tid), keep=False)
                if found:
                    pids += found
                    forking.add(int(tid))
            return pids, forking
        except OSError:
            pass
    return [child.pid for child in _safe(proc.children, default=[])], set()


class RssReader:
    """One process's RSS, cheap enough to read at every batch: /proc/PID/statm through a
    descriptor kept open (about 2 us), where psutil opens and parses a file each time
    (about 20 us). Elsewhere, or when /proc cannot be read, psutil."""

    def __init__(self, reader: ProcessReader) -> None:
        self.reader = reader
        self._fd: int | None = None
        if _IS_LINUX:
            with contextlib.suppress(OSError):
                self._fd = os.open(f"/proc/{reader.pid}/statm", os.O_RDONLY | os.O_CLOEXEC)

    def __call__(self) -> int | None:
        if self._fd is not None:
            try:
                # statm: size resident shared ... in pages (man 5 proc)
                return int(os.pread(self._fd, 128, 0).split()[1]) * _PAGE_SIZE
            except (OSError, IndexError, ValueError):
                pass
        return self.reader.rss(self.reader.pid)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def page_faults(proc: psutil.Process, memory: Any = None) -> dict[str, int | None]:
    """Minor and major page faults: /proc/PID/stat on Linux, pfaults/pageins on macOS."""
    if _IS_LINUX:
        try:
            with open(f"/proc/{proc.pid}/stat", "rb") as f:
                # Fields after the ')' that closes the command name: minflt is the 8th,
                # majflt the 10th (man 5 proc: fields 10 and 12).
                fields = f.read().rsplit(b")", 1)[1].split()
            return {"minflt": int(fields[7]), "majflt": int(fields[9])}
        except (OSError, IndexError, ValueError):
            return {"minflt": None, "majflt": None}
    memory = memory or _safe(proc.memory_info)
    return {"minflt": getattr(memory, "pfaults", None), "majflt": getattr(memory, "pageins", None)}


def open_fds(proc: psutil.Process) -> int | None:
    """Open file descriptors: leaks in workers (shared-memory tensors kept alive) show as a
    count that only rises. Windows has no such count."""
    num_fds = getattr(proc, "num_fds", None)
    return _safe(num_fds) if num_fds else None


def cpu_frequency_mhz() -> float | None:
    """Current clock frequency, averaged over cores; None where psutil cannot read it
    (many VMs and containers). A falling clock with flat memory is thermal throttling."""
    try:
        freq = psutil.cpu_freq()
    except (OSError, NotImplementedError, AttributeError):
        return None
    return float(freq.current) if freq and freq.current else None


def own_faults() -> tuple[int, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_majflt


def system_memory() -> dict[str, int]:
    """Memory available, swap in use, bytes swapped in and out since boot."""
    if _IS_LINUX:
        found = _proc_system_memory()
        if found is not None:
            return found
    vm = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return {"sys_available": vm.available, "swap_used": swap.used, "swap_in": swap.sin, "swap_out": swap.sout}


def _meminfo_kib(meminfo: bytes, key: bytes) -> int:
    at = meminfo.index(key)
    return int(meminfo[at + len(key):meminfo.index(b"\n", at)].split()[0])


def _vmstat_pages(vmstat: bytes, key: bytes) -> int:
    at = vmstat.index(b"\n" + key + b" ") + len(key) + 2
    return int(vmstat[at:vmstat.index(b"\n", at)])


def _proc_system_memory() -> dict[str, int] | None:
    """The four figures from /proc/meminfo and /proc/vmstat, read for them alone (psutil
    parses every line of both: the sampler pays it every tick). The same units as psutil:
    kB lines times 1024, swap counters in 4 KiB pages. None: a field is missing (a kernel
    without MemAvailable), psutil instead."""
    try:
        meminfo = procfs.read("/proc/meminfo")
        vmstat = b"\n" + procfs.read("/proc/vmstat")
        total, free = _meminfo_kib(meminfo, b"SwapTotal:"), _meminfo_kib(meminfo, b"SwapFree:")
        return {"sys_available": _meminfo_kib(meminfo, b"MemAvailable:") * 1024, "swap_used": (total - free) * 1024,
                "swap_in": _vmstat_pages(vmstat, b"pswpin") * 4096, "swap_out": _vmstat_pages(vmstat, b"pswpout") * 4096}
    except (OSError, ValueError, IndexError):
        return None


def _safe(fn, default=None):
    try:
        return fn()
    except (psutil.Error, OSError):
        return default
