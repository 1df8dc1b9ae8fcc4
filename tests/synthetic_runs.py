"""Synthetic run records with known answers, for testing the analysis without training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dcnprobe.hooks import PHASES
from dcnprobe.records import SCHEMA_VERSION, RunWriter

MB = 1 << 20


def write_run(
    directory: Path,
    *,
    epochs: int = 2,
    batches: int = 120,
    base: float = 0.100,
    slowdown: float = 1.0,  # epochs >= 2 run this much slower (a step at the epoch start)
    ramp_per_step: float = 0.0,  # seconds added per global step, in the phase `ramp_phase`
    ramp_phase: str = "other",
    slow_phase: str = "forward",
    in_use_per_step: float = 0.0,  # bytes retained per step (glibc in-use)
    rss_per_step: float | None = None,  # defaults to in_use_per_step
    py_blocks_per_step: float = 0.0,
    gc_spikes_every: int = 0,  # a generation-2 collection of gc_spike_s every N steps
    gc_spike_s: float = 0.0,
    worker_uss_per_step: float = 0.0,
    workers: int = 0,
    new_workers_each_epoch: bool = False,
    resource_tracker: bool = False,  # one more python child that lives through every epoch (spawn's tracker)
    first_wait_s: float = 0.0,
    cache_clear_s: float = 0.0,
    device: dict | None = None,  # {"driver": bytes per step, "current": bytes per step}
    stall: bool = False,
    # Per-epoch machine and CPU figures, {epoch: value}; epochs not named get the default.
    outside_load: dict[int, float] | None = None,  # other processes' share of all cores (default 0.01)
    threads: dict[int, int] | None = None,  # main-process threads (default 6)
    system_share: dict[int, float] | None = None,  # kernel share of the run's CPU (default 0.02)
    involuntary_per_s: dict[int, float] | None = None,  # involuntary switches per second (default 10)
    cpu_freq_mhz: dict[int, float | None] | None = None,  # CPU clock; None: not readable (the default)
    # Periodic bursts: every k batches of epoch e (k by epoch), one batch takes burst_s longer.
    burst_every: dict[int, int] | None = None,
    burst_s: float = 0.0,
    # Cache cleared every N batches; the batch after each clear pays after_clear_s in forward.
    cache_clear_every: int = 0,
    after_clear_s: float = 0.0,
    gc_disabled: bool = False,  # the collector's counters never move
    fds_per_step: float = 0.0,
    worker_fds: int = 8,
    worker_cpu_per_step: dict[int, float] | None = None,  # each worker's CPU seconds per step, by epoch (default 0.001)  # each worker's open descriptors (forked after CUDA starts: dozens)
    # With new workers each epoch: the first sample of a later epoch still lists the last
    # epoch's workers, shutting down beside the new ones (a moment of twice the workers).
    lingering_workers: bool = False,
    # Workers of a second loader that join at epoch 2 and stay (an evaluation loader's,
    # persistent): more processes, and their descriptors, once.
    later_workers: int = 0,
    # Each epoch's new workers are born holding this many more descriptors (inherited from
    # the workers alive when they were forked): more per process, none opened by them.
    inherited_fds_per_epoch: int = 0,
    # From epoch 2, batches take `shape_sizes` distinct row counts; the first batch of each
    # new one pays new_shape_s in forward (a graph compiled for it).
    shape_sizes: int = 0,
    new_shape_s: float = 0.0,
    # A knee: from step knee_step, forward takes knee_s longer and each batch has
    # knee_major_faults major page faults (memory ran out; pages are read back from disk).
    knee_step: int | None = None,
    knee_s: float = 0.0,
    knee_major_faults: int = 0,
    cores: int = 2,
    seed: int = 0,
) -> Path:
    rng = np.random.default_rng(seed)
    writer = RunWriter(directory)
    writer.write("header", {"schema": SCHEMA_VERSION, "settings": {"num_workers": workers}, "sync": "batch",
                            "environment": {"cpu_count": cores}, "phases": list(PHASES)})
    step = 0
    t = 0.0
    cpu_user = cpu_system = switches = busy = worker_cpu = 0.0
    gc_counts = [0, 0, 0]
    seen_rows: set[int] = set()
    rss_rate = in_use_per_step if rss_per_step is None else rss_per_step
    for epoch in range(1, epochs + 1):
        pids = [1000 + w + (100 * epoch if new_workers_each_epoch else 0) for w in range(workers)]
        pids += [999] if resource_tracker else []
        pids += [2000 + w for w in range(later_workers)] if epoch > 1 else []
        leaving = [pid - 100 for pid in pids if pid >= 1100] if lingering_workers and epoch > 1 else []
        for batch in range(batches):
            noise = 1 + 0.03 * rng.standard_normal()
            clears = cache_clear_every and batch % cache_clear_every == cache_clear_every - 1
            phases = {"data_wait": 0.002, "to_device": 0.0001, "forward": 0.04 * noise, "backward": 0.05 * noise,
                      "optimizer": 0.007, "cache_clear": cache_clear_s if (clears or not cache_clear_every) else 0.0,
                      "other": 0.0009}
            if cache_clear_every and batch % cache_clear_every == 0 and batch > 0:
                phases["forward"] += after_clear_s  # re-filling what the previous batch's clear threw away
            k = (burst_every or {}).get(epoch)
            if k and batch % k == k - 1:
                phases["other"] += burst_s
            if epoch >= 2:
                phases[slow_phase] += base * (slowdown - 1)
            phases[ramp_phase] += ramp_per_step * step
            if batch == 0 and epoch >= 2:
                phases["data_wait"] += first_wait_s
            kneed = knee_step is not None and step >= knee_step
            if kneed:
                phases["forward"] += knee_s
            rows = 4096 - 8 * (batch % shape_sizes + 1) if shape_sizes and epoch >= 2 else 4096
            if rows not in seen_rows and step > 0:
                phases["forward"] += new_shape_s
            seen_rows.add(rows)
            gc_s, gen2 = 0.0, 0
            if gc_spikes_every and step % gc_spikes_every == gc_spikes_every - 1:
                gc_s, gen2 = gc_spike_s * (1 + step / 100), 1
                phases["other"] += gc_s
            total = sum(phases.values())
            t += total
            share = (system_share or {}).get(epoch, 0.02)
            cpu_user += total * (1 - share)
            cpu_system += total * share
            switches += total * (involuntary_per_s or {}).get(epoch, 10.0)
            worker_rate = (worker_cpu_per_step or {}).get(epoch, 0.001)
            worker_cpu += worker_rate
            own = total + worker_rate * len(pids)  # main process, and each worker's CPU per step (below)
            busy += own + (outside_load or {}).get(epoch, 0.01) * cores * total  # ours plus everyone else's
            if not gc_disabled:
                gc_counts = [gc_counts[0] + 1, gc_counts[1] + (step % 10 == 0), gc_counts[2] + (step % 50 == 0)]
            writer.write("batch", {"epoch": epoch, "batch": batch, "step": step, "t": t, **phases, "total": total,
                                   "rss": 500 * MB + rss_rate * step, "py_blocks": 100_000 + py_blocks_per_step * step,
                                   "gc_s": gc_s, "gc_gen2": gen2, "minflt": 10, "majflt": knee_major_faults if kneed else 0, "rows": rows})
            if step % 5 == 0:
                sample = {"t": t, "epoch": epoch, "step": step, "main_rss": 500 * MB + rss_rate * step,
                          "main_uss": 400 * MB, "main_threads": (threads or {}).get(epoch, 6),
                          "main_cpu_user": cpu_user, "main_cpu_system": cpu_system, "main_ctx_involuntary": switches,
                          "main_fds": 20 + int(fds_per_step * step), "machine_busy_s": busy,
                          "cpu_freq_mhz": (cpu_freq_mhz or {}).get(epoch),
                          "gc_count_0": gc_counts[0], "gc_count_1": gc_counts[1], "gc_count_2": gc_counts[2],
                          "malloc_in_use": 300 * MB + in_use_per_step * step,
                          "malloc_free_held": 10 * MB, "py_blocks": 100_000 + py_blocks_per_step * step,
                          "sys_available": 16 << 30, "swap_used": 0, "swap_in": 0, "swap_out": 0,
                          "workers": [{"pid": pid, "rss": 200 * MB, "uss": 20 * MB + worker_uss_per_step * step,
                                       "threads": 2, "fds": worker_fds + inherited_fds_per_epoch * (epoch - 1), "cpu_user": worker_cpu, "cpu_system": 0.0,
                                       "ctx_involuntary": step} for pid in pids + (leaving if batch < 5 else [])]}
                if device:
                    sample["device_driver"] = 1000 * MB + device.get("driver", 0) * step
                    sample["device_current"] = 800 * MB + device.get("current", 0) * step
                writer.write("memory", sample)
            step += 1
            if stall and epoch == epochs and batch == batches // 2:
                writer.write("stall", {"t": t + 40, "epoch": epoch, "batch": batch + 1, "step": step,
                                       "waited_s": 40.0, "median_batch_s": base, "workers": pids, "stacks": []})
                writer.write("footer", {"status": "stalled"})
                writer.close()
                return directory
        writer.write("epoch", {"epoch": epoch, "batches": batches})
    writer.write("footer", {"status": "ok"})
    writer.close()
    return directory
