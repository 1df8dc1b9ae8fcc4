"""What a bisect costs on a planted 2-setting culprit (num_workers + persistent_workers):
trials, batches run (in full trials' worth: a trial of E epochs of B batches is E * B),
and wall time, from the bisect's own bisect.json and its trials' run records.

    python -m dcnprobe.benchmarks.bisect_cost trainer   # the built-in trainer, a slow persistent loader planted
    python -m dcnprobe.benchmarks.bisect_cost example   # examples/per_sample_loop.py --fault worker-history
    python -m dcnprobe.benchmarks.bisect_cost --before trainer   # every trial run to its end, as before

Minutes per bisect, so it is not in the gate's profiles; issue 24's goal is a 2-setting
culprit in at most 5 full trials' worth of batches.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from dcnprobe.records import BATCH, RUN_FILE, parse_record

ROOT = Path(__file__).resolve().parents[1]
MAX_BATCHES = 60
SHOWN = ("num_workers", "persistent_workers", "cache_clear")
COMMANDS = {
    "trainer": ["--data", "synthetic:train_rows=32768,val_rows=4096", "--batch-size", "512",
                "--fault", f"{ROOT / 'tests' / 'plugins' / 'slow_loader.py'}:SlowPersistentLoader"],
    "example": ["--", sys.executable, str(ROOT / "examples" / "per_sample_loop.py"), "--fault", "worker-history"],
}


def batches_in(run_dir: str) -> int:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if (r := parse_record(line)) is not None and r["type"] == BATCH)


# The bisect as it was before issue 24's change: the same code, every trial run to its end.
BEFORE = ("import sys, dcnprobe.bisect.search as s; real = s.replace; "
          "s.replace = lambda obj, **kw: real(obj, **{k: v for k, v in kw.items() if k != 'stop_when_healthy'}); "
          "from dcnprobe.cli import main; sys.argv[0] = 'dcnprobe'; main()")


def measure(loop: str, out: Path, before: bool = False) -> dict[str, Any]:
    start = ["-c", BEFORE] if before else ["-m", "dcnprobe"]
    command = [sys.executable, *start, "bisect", "--max-batches", str(MAX_BATCHES), "--out", str(out),
               *COMMANDS[loop]]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    data = json.loads((out / "bisect.json").read_text()) if (out / "bisect.json").is_file() else {}
    trials = data.get("trials", [])
    batches = [batches_in(t["run_dir"]) for t in trials]
    epochs = data.get("template", {}).get("epochs", 2)
    return {
        "loop": loop, "before": before, "exit": done.returncode, "culprit": data.get("culprit"), "finding": data.get("finding"),
        "trials": len(trials), "trials_run": data.get("trials_run"), "wall_s": round(data.get("wall_s", 0.0), 1),
        "batches": sum(batches), "per_trial": batches,
        "full_trials": round(sum(batches) / (epochs * MAX_BATCHES), 2),
        "stopped": [t.get("stopped") for t in trials],
        # What each trial ran, in the order run: the settings bisect moves, and the replicate.
        "ran": [" ".join(f"{k}={t['settings'].get(k)}" for k in SHOWN) + f" r{t.get('replicate', 0)}" for t in trials],
    }


if __name__ == "__main__":
    before = "--before" in sys.argv
    for loop in [a for a in sys.argv[1:] if a != "--before"] or ["trainer", "example"]:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(measure(loop, Path(tmp) / "bisect", before)), flush=True)
