"""Stopping `dcnprobe train` with DataLoader workers, for real, at a random moment.

SIGINT to the main process alone (what Ctrl-C does when the workers ignore the terminal,
or `kill -INT PID`): one line, `dcnprobe: interrupted; kept: ...`, exit 130, no traceback
from the workers, a record whose footer says `interrupted`, no worker left behind.
SIGTERM: the same, with exit code 143 and "terminated".
SIGKILL: nothing can be written, but the record must stay readable up to its last line
and the workers must go (they watch their parent).

Real processes on a loaded 2-core machine: no timing assertions, only generous timeouts.
Run as a script for the long SIGKILL count: `python tests/test_interrupts.py 20`.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

TINY_DATA = "synthetic:train_rows=8192,val_rows=4096"  # conftest's; repeated so the script runs alone
START_TIMEOUT_S = 180.0  # torch import and worker start-up on a busy machine
WORKERS_GONE_S = 60.0  # orphaned DataLoader workers notice their dead parent within seconds


def start_train(out: Path, workers: int = 2) -> tuple[subprocess.Popen, Path]:
    """`dcnprobe train` with workers, long enough to be stopped at any point."""
    err = out.with_name(out.name + ".stderr")
    argv = [sys.executable, "-m", "dcnprobe", "train", "--data", TINY_DATA, "--batch-size", "512",
            "--num-workers", str(workers), "--epochs", "1000", "--threads", "1", "--quiet", "--out", str(out)]
    with open(err, "w") as stream:
        # A child of a non-interactive shell may inherit SIGINT ignored; the test wants Python's own handling.
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stream,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, err


def wait_for_batches(proc: subprocess.Popen, out: Path, count: int = 1) -> None:
    record = out / "run.jsonl"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if record.exists() and record.read_text(errors="replace").count('"type":"batch"') >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no batch recorded within {START_TIMEOUT_S:.0f} s (exit code {proc.poll()})")


def workers_of(proc: subprocess.Popen) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def left_alive(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + WORKERS_GONE_S
    while True:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_at_random(out: Path, sig: int, rng: random.Random) -> dict:
    """Start train, let it record a random number of batches plus a random pause, send `sig`
    to the main process alone, and say what came of it."""
    from dcnprobe.errors import UsageError
    from dcnprobe.runs import read_run

    proc, err = start_train(out)
    try:
        wait_for_batches(proc, out, rng.randint(1, 40))
        time.sleep(rng.uniform(0, 0.5))
        workers = workers_of(proc)
        os.kill(proc.pid, sig)
        code = proc.wait(timeout=START_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    try:
        status = read_run(out).status
    except UsageError as exc:
        status = f"unreadable: {exc}"
    return {"code": code, "status": status, "workers": len(workers), "orphans": left_alive(workers),
            "stderr": err.read_text(errors="replace")}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigint_to_the_main_process_alone_is_one_line(tmp_path, tiny_data, seed):
    result = kill_at_random(tmp_path / "run", signal.SIGINT, random.Random(seed))
    lines = result["stderr"].strip().splitlines()
    assert result["code"] == 130, result["stderr"]
    assert "Traceback" not in result["stderr"] and "Error" not in result["stderr"], result["stderr"]
    assert lines and lines[-1].startswith("dcnprobe: interrupted; kept: the run record"), result["stderr"]
    assert result["status"] == "interrupted"
    assert result["workers"] >= 2 and result["orphans"] == []


@pytest.mark.slow
@pytest.mark.parametrize("seed", [4, 5])
def test_sigterm_leaves_like_ctrl_c_with_its_own_exit_code(tmp_path, tiny_data, seed):
    # What a job scheduler's time limit or `kill PID` sends: before, Python died at once and
    # the record had every batch but no footer.
    result = kill_at_random(tmp_path / "run", signal.SIGTERM, random.Random(seed))
    lines = result["stderr"].strip().splitlines()
    assert result["code"] == 143, result["stderr"]
    assert "Traceback" not in result["stderr"], result["stderr"]
    assert lines and lines[-1].startswith("dcnprobe: terminated; kept: the run record"), result["stderr"]
    assert result["status"] == "interrupted"
    assert result["workers"] >= 2 and result["orphans"] == []


@pytest.mark.slow
def test_sigkill_leaves_a_readable_record_and_no_workers(tmp_path, tiny_data):
    rng = random.Random(7)
    for i in range(3):
        result = kill_at_random(tmp_path / f"run{i}", signal.SIGKILL, rng)
        assert result["code"] == -signal.SIGKILL
        assert not result["status"].startswith("unreadable"), result["status"]
        assert result["orphans"] == []


def main(count: int) -> int:
    """The long count: `count` SIGKILLs at random moments; prints the tally."""
    from dcnprobe.model.data.source import load_data

    from dcnprobe.cli.train import builtin_command  # noqa: F401 - model/ importable, like the tests

    load_data(TINY_DATA)
    rng = random.Random(int(time.time()))
    unreadable = orphaned = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(count):
            result = kill_at_random(Path(tmp) / f"run{i}", signal.SIGKILL, rng)
            unreadable += result["status"].startswith("unreadable")
            orphaned += len(result["orphans"])
            print(f"{i + 1:2d}: exit {result['code']}, record {result['status']}, workers {result['workers']}, "
                  f"orphans {result['orphans']}", flush=True)
    print(f"{count} SIGKILLs: {unreadable} unreadable records, {orphaned} orphaned workers")
    return 1 if unreadable or orphaned else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
