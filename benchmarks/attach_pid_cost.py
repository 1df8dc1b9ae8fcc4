"""What `dcnprobe attach PID` costs the run it watches: the run's batch time while an
attach is running over its batch time just before, from the run's own timestamps.

A real training script started without dcnprobe (examples/per_sample_loop.py, two
DataLoader workers, `--log-batches`: it writes the wall-clock end of every batch) runs
throughout. Segments alternate: an attach (the whole command: start-up, the window, the
summaries after it), then as long again without one. Each batch belongs to the segment its
end falls in; the ratio of median batch times is levelled per (attached, bare) pair and
judged on its paired bootstrap interval (benchmarks.timing.paired_ratio), so that the
machine's drift, and other people's load on it, hits both sides of a pair alike.

    python -m dcnprobe.benchmarks.attach_pid_cost --pairs 4 --window 20
    python -m dcnprobe.benchmarks.attach_pid_cost --no-stacks     # /proc only, no py-spy

Not a gate measure (no baseline yet): `run(profile)` returns it in the runner's shape.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from dcnprobe.benchmarks.timing import paired_ratio

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "per_sample_loop.py"
FIRST_BATCHES = 20  # the run's start (imports, the first epoch's workers) before any segment


def _batch_ends(log: Path) -> np.ndarray:
    text = log.read_text() if log.exists() else ""
    return np.array([float(x) for x in text.split()], dtype=float)


def _wait_for_batches(log: Path, n: int, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while len(_batch_ends(log)) < n:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the training script ended or stalled before {n} batches")
        time.sleep(0.5)


def measure(
    pairs: int = 4,
    window_s: float = 20.0,
    stacks: bool = True,
    fault: str | None = None,
    keep: Path | None = None,
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="attach-pid-cost-"))
    log = work / "batches.txt"
    command = [
        sys.executable,
        str(EXAMPLE),
        "--workers",
        "2",
        "--epochs",
        "1000",
        "--log-batches",
        str(log),
    ]
    if fault:
        command += ["--fault", fault]
    run = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    spans: list[tuple[bool, float, float]] = []  # (attached, start, end), wall clock
    attaches: list[dict[str, Any]] = []
    try:
        _wait_for_batches(log, FIRST_BATCHES, run)
        for number in range(pairs):
            out = work / f"attach-{number}"
            args = [
                sys.executable,
                "-m",
                "dcnprobe",
                "attach",
                str(run.pid),
                "--for",
                f"{window_s:g}s",
                "--out",
                str(out),
            ] + ([] if stacks else ["--no-stacks"])
            start = time.time()
            done = subprocess.run(args, capture_output=True, text=True)
            end = time.time()
            if done.returncode != 0:
                raise RuntimeError(
                    f"attach failed ({done.returncode}): {done.stderr.strip()[-500:]}"
                )
            spans.append((True, start, end))
            header = json.loads((out / "run.jsonl").read_text().splitlines()[0])
            analysis = json.loads((out / "analysis.json").read_text())
            attaches.append(
                {
                    "command_s": end - start,
                    "window_start": header["outside"]["started_at"],
                    "window_s": analysis["window_s"],
                    "attach_load": analysis["attach_load"],
                    "outside_load": analysis["outside_load"],
                    "causes": [c["id"] for c in analysis["causes"]],
                }
            )
            start = time.time()
            time.sleep(end - spans[-1][1])  # as long without an attach
            spans.append((False, start, time.time()))
    finally:
        os.killpg(run.pid, signal.SIGTERM)  # the script and its workers (a session of their own)
        try:
            run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.kill()
    ends = _batch_ends(log)
    if keep is not None:
        shutil.copytree(work, keep, dirs_exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    times = np.diff(ends)
    segments = []
    for attached, start, end in spans:
        inside = (ends[1:] > start) & (ends[1:] <= end)
        segments.append((attached, times[inside].tolist()))
    result = paired_ratio(segments)
    # The window alone (sampling, dumps and py-spy running), without the command's start-up and summaries.
    windows = []
    for attach in attaches:
        inside = (ends[1:] > attach["window_start"]) & (
            ends[1:] <= attach["window_start"] + attach["window_s"]
        )
        windows.append(times[inside])
    bare = np.concatenate([np.asarray(t) for on, t in segments if not on])
    result["detail"].update(
        pairs=pairs,
        window_s=window_s,
        stacks=stacks,
        fault=fault,
        window_only_median_ratio=float(np.median(np.concatenate(windows)) / np.median(bare))
        if windows
        else None,
        attaches=attaches,
        segment_medians_ms=[
            [on, round(float(np.median(t)) * 1000, 1) if t else None, len(t)] for on, t in segments
        ],
    )
    return {"attach_pid_cost": result}


def run(profile: str) -> dict[str, Any]:
    return measure(pairs=3 if profile == "quick" else 6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--window", type=float, default=20.0, help="seconds each attach watches")
    parser.add_argument(
        "--no-stacks", action="store_true", help="attach with --no-stacks (no py-spy)"
    )
    parser.add_argument(
        "--fault", help="plant a fault of examples/per_sample_loop.py in the watched run"
    )
    parser.add_argument("--keep", type=Path, help="copy the batch log and the attach records here")
    args = parser.parse_args()
    result = measure(args.pairs, args.window, not args.no_stacks, args.fault, args.keep)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
