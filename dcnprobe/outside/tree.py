"""The processes of a training run, found from any one of them, from outside.

A PID may name the training script's process or one of its DataLoader workers. Workers
are recognised by what PyTorch and multiprocessing make of them: torch names each worker
process `pt_data_worker`; a spawned (or forkserver) child carries `--multiprocessing-fork`
on its command line; a forked child that was not renamed has its parent's executable and
command line. From the given process the search goes up while the process is such a
child (or a multiprocessing helper: resource tracker, forkserver), and the process it
stops at is the main one: the process whose children are the workers.

Everything here reads /proc (through psutil) and works on another user's processes as far
as the kernel lets anyone read them: command lines and parents always, the executable and
working folder only with permission (then None).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass

import psutil

from dcnprobe.errors import UsageError

MAIN, WORKER, HELPER, OTHER = "main", "worker", "helper", "other"
WORKER_NAME = "pt_data_worker"  # torch names DataLoader worker processes so (prctl PR_SET_NAME)
SPAWNED_CHILD = "--multiprocessing-fork"  # argv of a child started by spawn or forkserver
HELPER_MARKERS = (
    "multiprocessing.resource_tracker",
    "multiprocessing.forkserver",
    "multiprocessing.semaphore_tracker",
)
PYTHON_NAME = re.compile(r"^(python|pypy)[\d.]*[a-z]?(\.exe)?$")


@dataclass(frozen=True)
class Member:
    pid: int
    role: str  # MAIN, WORKER, HELPER (multiprocessing's own), OTHER (anything else the run started)
    name: str  # the process name the kernel keeps (comm)
    python: bool


@dataclass(frozen=True)
class Target:
    given_pid: int
    given_role: str  # what the given PID is in its run: MAIN or WORKER (or HELPER)
    main_pid: int
    argv: tuple[str, ...]  # the main process's command line, from /proc
    cwd: str | None  # its working folder, when readable
    exe: str | None
    user: str | None

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    def rerun(self) -> str:
        """The one command that measures what an attach from outside cannot: batch times."""
        run = f"dcnprobe run -- {self.command}"
        if self.cwd and os.path.realpath(self.cwd) != os.path.realpath(os.getcwd()):
            return f"cd {shlex.quote(self.cwd)} && {run}"
        return run


def find_target(pid: int) -> Target:
    """The run that process `pid` belongs to. A PID that does not exist, has exited or is
    not Python is a UsageError (one line, exit 2)."""
    proc = _process(pid)
    if not _is_python(proc):
        raise UsageError(
            f"process {pid} ({_describe(proc)}) is not a Python process: give the PID of the "
            "training script, or of one of its DataLoader workers"
        )
    given_role = MAIN
    main = proc
    while True:
        parent = _safe(main.parent)
        if parent is None or not _is_python(parent):
            break
        role = role_of(main, parent)
        if role not in (WORKER, HELPER):
            break
        if main.pid == proc.pid:
            given_role = role
        main = parent
    argv = tuple(_safe(main.cmdline, default=[]) or [])
    if not argv:
        raise UsageError(
            f"process {main.pid} has no command line to read (it is exiting, or it is a kernel thread)"
        )
    return Target(
        given_pid=pid,
        given_role=given_role,
        main_pid=main.pid,
        argv=argv,
        cwd=_safe(main.cwd),
        exe=_safe(main.exe),
        user=_safe(main.username),
    )


def role_of(proc: psutil.Process, parent: psutil.Process | None) -> str:
    """What `proc` is to its parent: a DataLoader (or multiprocessing) WORKER, a HELPER of
    multiprocessing, or OTHER (a program of its own: a shell, a compiler, another script)."""
    if not _is_python(proc):
        return OTHER
    if _safe(proc.name) == WORKER_NAME:
        return WORKER
    argv = _safe(proc.cmdline, default=[]) or []
    text = " ".join(argv)
    if any(marker in text for marker in HELPER_MARKERS):
        return HELPER
    if SPAWNED_CHILD in argv:
        return WORKER
    if (
        parent is not None
        and argv
        and argv == (_safe(parent.cmdline, default=[]) or [])
        and _safe(proc.exe) == _safe(parent.exe)
    ):
        return (
            WORKER  # forked: the same program, not renamed (multiprocessing.Pool, a fork by hand)
        )
    return OTHER


class Tree:
    """The run's processes now: the main one and all its descendants, each with a role.
    Roles are worked out once per process (keyed by PID and start time, since PIDs are reused)."""

    def __init__(self, main_pid: int) -> None:
        self.main_pid = main_pid
        self.main = _process(main_pid)
        self._roles: dict[tuple[int, float], Member] = {}
        self._handles: dict[int, psutil.Process] = {}

    def alive(self) -> bool:
        return (
            _safe(self.main.is_running, default=False)
            and _safe(self.main.status) != psutil.STATUS_ZOMBIE
        )

    def members(self) -> list[Member]:
        """Main first, then descendants by PID. Empty once the main process is gone."""
        if not self.alive():
            return []
        found = [self._member(self.main, None)]
        parents = descendants(self.main_pid)
        handles = {self.main_pid: self.main}
        for pid in sorted(parents):
            handle = self._handles.get(pid)
            if handle is None:
                try:
                    handle = self._handles[pid] = psutil.Process(pid)
                except psutil.Error:
                    continue
            handles[pid] = handle
        for pid in sorted(parents):
            if pid in handles:
                found.append(self._member(handles[pid], handles.get(parents[pid])))
        self._handles = {pid: h for pid, h in self._handles.items() if pid in parents}
        return [m for m in found if m is not None]

    def _member(self, proc: psutil.Process, parent: psutil.Process | None) -> Member | None:
        started = _safe(proc.create_time)
        if started is None:
            return None  # gone between the listing and now
        key = (proc.pid, started)
        member = self._roles.get(key)
        if member is None:
            role = MAIN if parent is None else role_of(proc, parent)
            member = self._roles[key] = Member(
                proc.pid, role, _safe(proc.name, default="?"), _is_python(proc)
            )
        return member


def descendants(pid: int) -> dict[int, int]:
    """Every descendant of `pid` -> its parent. On Linux from /proc/PID/task/TID/children
    (tens of microseconds a process), where psutil would read every process on the
    machine (tens of milliseconds, twice a second); elsewhere from psutil."""
    if sys.platform.startswith("linux") and os.path.isdir(f"/proc/{pid}/task"):
        found: dict[int, int] = {}
        todo = [pid]
        while todo:
            parent = todo.pop()
            try:
                tids = os.listdir(f"/proc/{parent}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{parent}/task/{tid}/children") as f:
                        children = [int(c) for c in f.read().split()]
                except (OSError, ValueError):
                    continue
                for child in children:
                    if child not in found:
                        found[child] = parent
                        todo.append(child)
        return found
    try:
        return {
            c.pid: _safe(c.ppid, default=pid) for c in psutil.Process(pid).children(recursive=True)
        }
    except psutil.Error:
        return {}


def _process(pid: int) -> psutil.Process:
    try:
        proc = psutil.Process(pid)
        status = proc.status()
    except psutil.NoSuchProcess:
        raise UsageError(f"no process with PID {pid}") from None
    except psutil.AccessDenied:
        raise UsageError(f"process {pid} cannot be read at all (permission denied)") from None
    if status == psutil.STATUS_ZOMBIE:
        raise UsageError(f"process {pid} has exited (its parent has not collected it yet)")
    return proc


def _is_python(proc: psutil.Process) -> bool:
    if _safe(proc.name) == WORKER_NAME:
        return True
    exe = _safe(proc.exe)
    if exe and PYTHON_NAME.match(os.path.basename(exe)):
        return True
    argv = _safe(proc.cmdline, default=[]) or []
    # A script run through its shebang shows the interpreter first; the executable may be
    # unreadable (another user's process), the command line never is.
    return bool(argv) and bool(PYTHON_NAME.match(os.path.basename(argv[0])))


def _describe(proc: psutil.Process) -> str:
    argv = _safe(proc.cmdline, default=[]) or []
    name = _safe(proc.name, default="?")
    return f"{name}: {shlex.join(argv)[:80]}" if argv else name


def _safe(fn, default=None):
    try:
        return fn()
    except (psutil.Error, OSError):
        return default
