"""Run the epoch gate N times in a row, clean and planted alternately, and tabulate it.

    python -m dcnprobe.benchmarks.series --runs 10                          # clean vs unbounded-metric
    python -m dcnprobe.benchmarks.series --runs 1 --plant worker-stall      # another fault, once

Each run is the real gate (`python -m dcnprobe.benchmarks --only epoch [--plant FAULT]`, a fresh
process), so re-measuring and the quiet-machine rule apply as in CI. Clean and planted
alternate so that both see the same stretches of machine load. One line per run: exit
code, verdict, ratio and interval, outside load per epoch, load average before and after.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from dcnprobe.benchmarks.runner import UNDECIDED_EXIT

VERDICTS = {0: "pass", 1: "FAIL", UNDECIDED_EXIT: "UNSURE"}


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def one_run(plant: str | None, out: Path) -> str:
    argv = [sys.executable, "-m", "dcnprobe.benchmarks", "--only", "epoch", "--out", str(out)]
    if plant:
        argv += ["--plant", plant]
    before, started = load_average(), time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True)
    out.with_suffix(".log").write_text(done.stdout + done.stderr)
    took = time.monotonic() - started
    try:
        entry = json.loads(out.read_text())["results"]["epoch_ratio"]
    except (OSError, ValueError, KeyError) as exc:
        return f"rc={done.returncode} no result ({exc}); load {before} -> {load_average()}; {took:.0f} s"
    low, high = entry.get("interval") or (float("nan"), float("nan"))
    detail = entry.get("detail", {})
    outside = " / ".join(f"{v:.0%}" for v in detail.get("outside_load_by_epoch", {}).values()) or "?"
    first = f"; first try {detail['first_try']}" if detail.get("first_try") else ""
    return (f"{VERDICTS.get(done.returncode, f'rc={done.returncode}'):6s} {entry['value']:.3f} [{low:.3f}, {high:.3f}] "
            f"outside load {outside}{first}; load {before} -> {load_average()}; {took:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dcnprobe.benchmarks.series", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--plant", default="unbounded-metric", help="fault planted in every other run")
    parser.add_argument("--no-clean", action="store_true", help="planted runs only")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/series"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    kinds = ([] if args.no_clean else [None]) + [args.plant]
    for index in range(1, args.runs + 1):
        for plant in kinds:
            label = plant or "clean"
            print(f"{label:18s} {index:2d}  {one_run(plant, args.out / f'{label}-{index}.json')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
