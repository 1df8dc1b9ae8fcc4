"""The probe's overhead on each rank of a DistributedDataParallel job: the same torchrun
command (tests/programs/ddp_train.py, 2 ranks on gloo, one thread each) run bare and with
`dcnprobe run`'s attach, in alternating order, pair after pair. The stopwatch is the
program's own (its step-to-step times from epoch 2 on, written to truth-rankN.json), so
the probe measures nothing here; each rank's ratio is judged on its paired bootstrap
interval over the (attached, bare) run pairs (benchmarks.timing.paired_ratio).

    python -m dcnprobe.benchmarks.ddp_overhead [--pairs 6] [--batches 150] [--epochs 3]

Runs from a source checkout (the program is a test program); not part of the CI gate:
a pair of 2-rank runs takes about 20 s here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from dcnprobe.benchmarks.timing import paired_ratio

PROGRAM = Path(__file__).resolve().parents[1] / "tests" / "programs" / "ddp_train.py"
RANKS = 2


def one_run(attached: bool, batches: int, epochs: int) -> dict[int, list[float]]:
    """Each rank's step times after epoch 1, by its own clock."""
    from dcnprobe.contract import AttachConfig, launch_env

    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if attached:
            env = {**launch_env(AttachConfig(run_dir=str(Path(out) / "run"))), "OMP_NUM_THREADS": "1"}
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(RANKS),
                str(PROGRAM), "--batches", str(batches), "--epochs", str(epochs), "--truth", str(Path(out) / "t.json")]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the DDP program failed ({done.returncode}): {done.stderr[-2000:]}")
        times = {}
        for rank in range(RANKS):
            truth = json.loads((Path(out) / f"truth-rank{rank}.json").read_text())
            times[rank] = [t for epoch in truth["step_s"][1:] for t in epoch[1:]]  # after warm-up
        if attached and not (Path(out) / "run" / "rank0" / "run.jsonl").exists():
            raise RuntimeError("the attached run left no rank record: the probe was not attached")
        return times


def measure(pairs: int, batches: int, epochs: int) -> dict[str, Any]:
    segments: dict[int, list[tuple[bool, list[float]]]] = {r: [] for r in range(RANKS)}
    for i in range(pairs):
        order = (True, False) if i % 2 == 0 else (False, True)  # neither side always first
        for attached in order:
            for rank, times in one_run(attached, batches, epochs).items():
                segments[rank].append((attached, times))
        print(f"pair {i + 1}/{pairs} done", file=sys.stderr, flush=True)
    return {f"rank{rank}": paired_ratio(_pairs_attached_first(s)) for rank, s in segments.items()}


def _pairs_attached_first(segments: list[tuple[bool, list[float]]]) -> list[tuple[bool, list[float]]]:
    """paired_ratio pairs segments in order (measured, bare): put each pair that way round."""
    ordered = []
    for a, b in zip(segments[::2], segments[1::2], strict=True):
        ordered += [a, b] if a[0] else [b, a]
    return ordered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if not PROGRAM.exists():
        print(f"ddp_overhead: skipped: needs a source checkout ({PROGRAM} is not installed with the package)")
        return
    load = os.getloadavg()
    result = measure(args.pairs, args.batches, args.epochs)
    print(json.dumps({"loadavg_before": load, "loadavg_after": os.getloadavg(), **result}, indent=1))


if __name__ == "__main__":
    main()
