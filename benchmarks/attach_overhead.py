"""The attach's overhead: the built-in trainer's loop bare and with the probe attached
from outside, interleaved, as the ratio of median batch times (goal 1.02), judged on
its bootstrap interval over (attached, bare) epoch pairs as the probe's overhead is.

The loop runs in a child process started the way `dcnprobe run` starts one (the attach
site on PYTHONPATH, DCNPROBE_ATTACH set), with no probe of its own (NullProbe), so every
measurement comes from the attach's hooks. Epochs alternate: in odd ones the agent's
hooks and sampler are in place, in even ones they are removed, so both sides share one
process, one model, one allocator state and the same stretch of machine time. The
stopwatch is the loop's own on_batch callback; each epoch's first batch (validation,
loader start-up and the switch itself come before it) is dropped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from typing import Any

from dcnprobe.benchmarks.timing import paired_ratio

RESULT_PREFIX = "attach-overhead-result "
DATA = "synthetic:val_rows=4096"  # the report's training split; a small validation split per epoch
# Smaller than the report's 4096 rows: the hooks cost about the same per batch whatever its
# size, so a 4x cheaper batch shows their share 4x more clearly, in a quarter of the time.
BATCH_SIZE = 1024


def run(profile: str) -> dict[str, Any]:
    # Short epochs: the sides alternate often, so that the machine's drift hits both alike.
    epochs, batches = (16, 10) if profile == "quick" else (64, 10)
    from dcnprobe.contract import AttachConfig, launch_env

    with tempfile.TemporaryDirectory() as out:
        # One intra-op thread, applied from outside like any setting: on a shared 2-core
        # machine, torch's spinning threads make batch times swing far more than the hooks cost.
        config = AttachConfig(run_dir=out, settings={"threads": "1"})
        done = subprocess.run([sys.executable, "-m", "dcnprobe.benchmarks.attach_overhead", str(epochs), str(batches)],
                              env=launch_env(config), capture_output=True, text=True, check=False)
        line = next((x for x in done.stdout.splitlines() if x.startswith(RESULT_PREFIX)), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"attach overhead child failed ({done.returncode}): {done.stderr[-2000:]}")
        times = json.loads(line[len(RESULT_PREFIX):])
    result = paired_ratio(times["segments"][2:])  # the first pair holds the warm-up
    result["detail"].update(epochs=epochs, recorded_batches=times["recorded_batches"])
    return {"attach_overhead": result}


def measure_attach(profile: str, faults: tuple[str, ...] = ()) -> dict[str, Any]:
    """The attach overhead alone, in a fresh run: what the gate measures again when unsure."""
    return run(profile)["attach_overhead"]


def _child(epochs: int, batches: int) -> None:
    """In the attached process: train, switching the agent's hooks on and off by epoch."""
    from dcnprobe.model.trainer import TrainJob, fit

    from dcnprobe.attach import active
    from dcnprobe.hooks import NullProbe
    from dcnprobe.settings import Settings

    agent = active.current()
    if agent is None:
        raise SystemExit("the attach agent is not installed in this process")
    segments: list[tuple[bool, list[float]]] = [(True, [])]  # one per epoch: (attached, batch times)
    state = {"attached": True, "last": 0.0}

    def on_batch(epoch: int, done: int, total: int) -> None:
        now = time.perf_counter()
        if done > 1:  # the first batch of an epoch carries validation, start-up and the switch
            segments[-1][1].append(now - state["last"])
        state["last"] = now

    def on_epoch(metrics: Any) -> None:
        state["attached"] = not state["attached"]
        segments.append((state["attached"], []))
        if state["attached"]:
            agent.hooks.install_measuring()
            agent.probe.sampler.start()
        else:
            agent.hooks.remove_measuring()
            agent.probe.sampler.stop()

    job = TrainJob(settings=Settings(device="cpu", batch_size=BATCH_SIZE), epochs=epochs, max_batches=batches, data=DATA, checkpoints=False)
    fit(job, probe=NullProbe(), on_batch=on_batch, on_epoch=on_epoch)
    recorded = agent.probe.step if agent.probe is not None else 0
    print(RESULT_PREFIX + json.dumps({"segments": [s for s in segments if s[1]], "recorded_batches": recorded}), flush=True)


if __name__ == "__main__":
    _child(int(sys.argv[1]), int(sys.argv[2]))
