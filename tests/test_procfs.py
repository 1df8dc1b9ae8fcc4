"""/proc files read through descriptors kept open: the same text as an open and a read,
and a process's files gone with it."""

import os
import subprocess
import sys

import pytest

from dcnprobe import procfs

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_a_kept_file_reads_what_an_open_reads_each_time_afresh():
    path = f"/proc/{os.getpid()}/stat"
    first = procfs.read(path)
    with open(path, "rb") as f:
        opened = f.read()
    assert first.split()[:3] == opened.split()[:3]  # pid, name, state
    sum(range(2_000_000))  # CPU time moves on
    later = procfs.read(path)
    utime = 13  # field 14 of man 5 proc, 0-based
    assert path in procfs._kept and int(later.split()[utime]) >= int(first.split()[utime])


def test_a_file_longer_than_a_block_is_read_whole(monkeypatch):
    monkeypatch.setattr(procfs, "_BLOCK", 64)
    procfs.forget("/proc/meminfo")
    text = procfs.read("/proc/meminfo")
    assert len(text) > 64 and text.endswith(b"\n") and b"MemAvailable:" in text


def test_a_file_of_a_process_that_ended_raises_and_its_descriptor_is_closed():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    path = f"/proc/{child.pid}/stat"
    assert procfs.read(path).startswith(str(child.pid).encode())
    fd = procfs._kept[path]
    child.kill()
    child.wait()
    with pytest.raises((FileNotFoundError, ProcessLookupError)):
        procfs.read(path)
    assert path not in procfs._kept
    with pytest.raises(OSError):
        os.fstat(fd)


def test_forgetting_a_process_closes_all_its_files():
    pid = os.getpid()
    procfs.read(f"/proc/{pid}/stat")
    procfs.read(f"/proc/{pid}/status")
    procfs.forget_process(pid)
    assert not [path for path in procfs._kept if path.startswith(f"/proc/{pid}/")]


def test_threads_that_come_and_go_leave_no_descriptors_behind():
    """A look at every thread's children keeps nothing open: a thread an epoch (a
    pin-memory thread) would otherwise leave a descriptor each, a count that rises with
    the epochs and reads as the loop's leak."""
    import threading

    from dcnprobe.processes import ProcessReader

    reader = ProcessReader()
    reader.child_pids(full=True)
    reader.child_pids(full=False)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        done = threading.Event()
        thread = threading.Thread(target=done.wait)
        thread.start()
        reader.child_pids(full=True)
        reader.child_pids(full=False)
        done.set()
        thread.join()
    assert len(os.listdir("/proc/self/fd")) <= before
