"""How `dcnprobe analyze` grows with the run: time and peak memory at 10k, 100k, 1M batches.

A long run is where slowdowns hurt most, and its record grows with it. The records here
are written by the probe's own writer (dcnprobe.records.RunWriter), shaped like a real
run of the built-in trainer: every batch record with all its phases, a background sample
every SAMPLE_EVERY batches with two DataLoader workers, an epoch record per epoch, a
footer. Each size is analysed in a fresh process (`python -m dcnprobe analyze`), whose
wall time and peak RSS (its own getrusage) are the measures.

    python -m dcnprobe.benchmarks.analysis_scale                  # 10k, 100k, 1M
    python -m dcnprobe.benchmarks.analysis_scale --sizes 10000    # one size
    python -m dcnprobe.benchmarks.analysis_scale --lines          # without the writer's batch table
    python -m dcnprobe.benchmarks.analysis_scale --slowdown 1.5   # a slow run: its change point found too

With --lines the writer's batch table (records.BATCH_TABLE) is removed before the analysis:
every batch line is parsed, as for a record from another writer or a table that does not
agree with its record.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dcnprobe.executables import python_module
from dcnprobe.records import BATCH_TABLE, RunWriter

EPOCHS = 5
SAMPLE_EVERY = 2  # a background sample per two batches: a 0.5 s sampler over 0.25 s batches
SIZES = (10_000, 100_000, 1_000_000)


def write_record(directory: Path, batches: int, epochs: int = EPOCHS, seed: int = 0, slowdown: float = 1.0) -> Path:
    """A run of `batches` batches over `epochs` epochs, written line by line: healthy, or
    with epochs after the first `slowdown` times slower (in backward)."""
    rng = random.Random(seed)
    writer = RunWriter(directory)
    writer.write("header", {"schema": 1, "created": "2026-11-30T00:00:00+0000", "pid": 1, "argv": ["train.py"],
                            "device": "cpu", "sync": "batch", "sample_interval": 0.5,
                            "phases": ["to_device", "forward", "backward", "optimizer", "cache_clear"],
                            "environment": {"cpu_count": 2}, "boundaries": {"batch": "api", "epoch": "api"},
                            "settings": {"num_workers": 2}})
    per_epoch = batches // epochs
    t, step, cpu, busy = 0.0, 0, 0.0, 0.0
    worker_cpu = [0.0, 0.0]
    for epoch in range(1, epochs + 1):
        started = t
        for batch in range(per_epoch):
            phases = {"data_wait": 0.002 * rng.random(), "to_device": 5e-5, "forward": 0.1 + 0.01 * rng.random(),
                      "backward": 0.08 + 0.01 * rng.random(), "optimizer": 0.01, "cache_clear": 0.0,
                      "other": 0.001 * rng.random()}
            if epoch > 1:
                phases["backward"] += 0.2 * (slowdown - 1)
            total = sum(phases.values())
            t += total
            writer.write("batch", {"epoch": epoch, "batch": batch, "step": step, "t": t, **phases, "total": total,
                                   "rss": 600_000_000 + rng.randrange(1 << 20), "in_use": 160_000_000,
                                   "py_blocks": 1_237_000 + rng.randrange(100), "gc_s": 0.0, "gc_gen2": 0,
                                   "minflt": rng.randrange(100), "majflt": 0, "rows": 4096})
            if step % SAMPLE_EVERY == 0:
                cpu += total * 1.9
                busy += total * 2.0
                worker_cpu = [c + 0.002 for c in worker_cpu]
                writer.write("memory", {
                    "t": t, "epoch": epoch, "step": step, "in_loop": True, "main_rss": 600_000_000,
                    "main_threads": 9, "main_cpu_user": cpu, "main_cpu_system": cpu / 20, "main_cpu_children": 0.0,
                    "main_ctx_involuntary": step, "main_fds": 32, "main_minflt": step * 10, "main_majflt": 0,
                    "main_uss": 400_000_000, "sys_available": 20_000_000_000, "swap_used": 0, "swap_in": 0,
                    "swap_out": 0, "machine_busy_s": busy, "cpu_freq_mhz": 2445.0, "malloc_in_use": 236_000_000,
                    "malloc_free_held": 32_000_000, "py_blocks": 1_237_185, "gc_count_0": step, "gc_time_0": 0.0,
                    "gc_count_1": 0, "gc_time_1": 0.0, "gc_count_2": 0, "gc_time_2": 0.0,
                    "workers": [{"pid": 1000 + w, "rss": 495_000_000, "threads": 3, "cpu_user": worker_cpu[w],
                                 "cpu_system": 0.01, "cpu_children": 0.0, "ctx_involuntary": 9, "fds": 21,
                                 "minflt": 4488, "majflt": 0, "uss": 20_000_000} for w in range(2)],
                })
            step += 1
        writer.write("loop_end", {"t": t, "epoch": epoch, "batches": per_epoch})
        writer.write("epoch", {"epoch": epoch, "batches": per_epoch, "t_start": started, "t_end": t})
    writer.write_footer("ok", t=t, epochs=epochs, steps=step)
    return writer.path


def analyse(directory: Path) -> dict[str, Any]:
    """`dcnprobe analyze DIR` in a fresh process: its wall time and its own peak RSS."""
    began = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        child = subprocess.Popen([*python_module("dcnprobe"), "analyze", str(directory)], stdout=out,
                                 stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - began
        out.seek(0)
        text = out.read().strip()
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "exit": child.returncode, "verdict": (text.splitlines() or [""])[0]}


def measure(sizes: tuple[int, ...] = SIZES, lines: bool = False, slowdown: float = 1.0) -> dict[str, Any]:
    results = {}
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            path = write_record(Path(tmp), size, slowdown=slowdown)
            if lines:
                (Path(tmp) / BATCH_TABLE).unlink()
            entry = analyse(Path(tmp))
            entry["record_mb"] = round(path.stat().st_size / 1e6, 1)
            results[str(size)] = entry
            print(f"{size:>9,} batches ({entry['record_mb']} MB): {entry['seconds']} s, peak RSS "
                  f"{entry['peak_rss_mb']} MB, exit {entry['exit']}\n{'':>10}{entry['verdict']}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dcnprobe.benchmarks.analysis_scale",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="batches per record, comma-separated")
    parser.add_argument("--lines", action="store_true", help="remove the writer's batch table: parse every line")
    parser.add_argument("--slowdown", type=float, default=1.0,
                        help="epochs after the first this many times slower (1.5: the verdict's change point too)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = measure(tuple(int(s) for s in args.sizes.split(",")), lines=args.lines, slowdown=args.slowdown)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
