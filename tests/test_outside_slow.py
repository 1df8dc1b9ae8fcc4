"""`dcnprobe attach PID` on real training runs started without dcnprobe, through the CLI:
a healthy run, a stalled one, a leak seen by a user without ptrace permission, and
--memory. Each takes tens of seconds (the script's start, a window of several seconds)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from outside_runs import LEAKING_WORKERS, batches_logged, training, workers_of

from dcnprobe.outside import thresholds as th

pytestmark = pytest.mark.slow


def attach(
    pid: int, out: Path, *args: str, user: list[str] | None = None
) -> subprocess.CompletedProcess:
    command = [
        *(user or []),
        sys.executable,
        "-m",
        "dcnprobe",
        "attach",
        str(pid),
        "--out",
        str(out),
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def analysis(out: Path) -> dict:
    return json.loads((out / "analysis.json").read_text())


def ids(out: Path) -> list[str]:
    return [c["id"] for c in analysis(out)["causes"]]


def test_a_healthy_run_names_no_cause_of_its_own(tmp_path):
    with training(tmp_path, "--workers", "2", "--epochs", "1000") as run:
        done = attach(run.pid, tmp_path / "attach", "--for", "8s")
    assert done.returncode == 0, done.stderr
    found = analysis(tmp_path / "attach")
    # Only other programs' load may be named, and only where it was measured.
    assert set(ids(tmp_path / "attach")) <= {"none", "machine-contention"}, done.stdout
    if "machine-contention" in ids(tmp_path / "attach"):
        assert found["outside_load"] >= th.OUTSIDE_BUSY
    assert found["ratio"] is None and "cannot be judged from outside" in done.stdout
    assert f"dcnprobe run -- {sys.executable} " in done.stdout or "dcnprobe run -- " in done.stdout
    progress = [line for line in done.stderr.splitlines() if line.startswith("attach ")]
    assert progress and "main" in progress[0] and "CPU" in progress[0]


def _wait_until_stuck(log: Path, quiet_s: float = 3.0, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    last, since = batches_logged(log), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = batches_logged(log)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s and now > 0:
            return
    raise RuntimeError("the run never stopped making progress")


def test_a_stalled_run_names_the_worker_everyone_waits_on(tmp_path):
    with training(
        tmp_path, "--fault", "hang", "--workers", "2", "--rows", "3200", "--epochs", "3"
    ) as run:
        _wait_until_stuck(tmp_path / "batches.txt")
        done = attach(run.pid, tmp_path / "attach", "--for", "6s", "--stall-after", "4")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "attach"
    assert ids(out)[0] == "stall", done.stdout
    stall = analysis(out)["stall"]
    assert stall["main_waits_for_workers"] and stall["idle_s"] >= 4
    blocked = [w for w in stall["waited_on"] if w["role"] == "worker"]
    assert blocked and any(
        "Rows.__getitem__" in f and "per_sample_loop.py" in f for f in blocked[0]["frames"]
    )
    assert (
        done.stdout.splitlines()[2].startswith("Stalled: ")
        and "Rows.__getitem__" in done.stdout.splitlines()[2]
    )
    records = [json.loads(line) for line in (out / "run.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records].count("stall") == 1 and records[-1]["status"] == "stalled"
    assert all((out / "stacks" / name).is_file() for name in stall["files"])


def _nobody_can_run_here() -> str | None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return "needs root and setpriv to run the attach as another user"
    probe = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-c",
            "import dcnprobe",
        ],
        capture_output=True,
    )
    return None if probe.returncode == 0 else "user 65534 cannot read this checkout"


@pytest.mark.skipif(_nobody_can_run_here() is not None, reason=str(_nobody_can_run_here()))
def test_without_ptrace_permission_one_line_says_so_and_the_diagnosis_goes_on(tmp_path):
    """The run belongs to root; the attach runs as user 65534 (nobody), which may read
    /proc/PID/stat and status but may not trace the run (or read its page maps)."""
    out = Path(tempfile.mkdtemp(prefix="dcnprobe-nobody-"))
    out.chmod(0o777)
    try:
        with training(tmp_path, *LEAKING_WORKERS) as run:
            done = attach(
                run.pid,
                out / "attach",
                "--for",
                "4s",
                "--sample-interval",
                "0.25",
                user=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
            )
        assert done.returncode == 0, done.stderr
        ptrace = [line for line in done.stderr.splitlines() if "ptrace not permitted" in line]
        assert len(ptrace) == 1, done.stderr
        assert all(
            fix in ptrace[0]
            for fix in ("sudo", "kernel.yama.ptrace_scope=0", "--cap-add SYS_PTRACE")
        )
        found = analysis(out / "attach")
        assert found["profile"] is None and "worker-memory-growth" in ids(out / "attach"), (
            done.stdout
        )
        assert (
            next(iter(found["memory"]["workers"].values()))["kind"] == "rss"
        )  # USS needs the page maps
        assert any("ptrace" in note for note in found["notes"])
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.skipif(
    shutil.which("gdb") is None and shutil.which("lldb") is None,
    reason="memray attach needs gdb or lldb",
)
def test_memory_capture_names_the_line_that_keeps_the_workers_memory(tmp_path):
    with training(tmp_path, *LEAKING_WORKERS) as run:
        worker = workers_of(run.pid)[0]
        done = attach(run.pid, tmp_path / "attach", "--for", "5s", "--memory")
    assert done.returncode == 0, done.stderr
    captures = {c["pid"]: c for c in analysis(tmp_path / "attach")["memray"]}
    assert worker in captures, done.stderr
    site, size = captures[worker]["held_at_end"][0]
    assert site.startswith("__getitem__") and "per_sample_loop.py" in site and size > 1 << 20
    assert "memory still held at the end of the window" in done.stdout
