"""What a launch adds to a Probe: where to record, its bounds, the live early warning and
the epoch profilers.

A Probe only records (dcnprobe.probe). Whoever starts the run decides the rest:
`dcnprobe train` from its options; the attach, started by `dcnprobe run`, a trial or
`profile-epoch`, from the launch config it was given (dcnprobe.contract.AttachConfig),
for its own Probe and for one the script makes; a script of its own with
`warn_on_slowdown(probe)`.
"""

from __future__ import annotations

from pathlib import Path

from dcnprobe.contract import AttachConfig
from dcnprobe.live.early_warning import EarlyWarning
from dcnprobe.probe import Probe
from dcnprobe.profiling.session import EpochProfiler
from dcnprobe.ratios import DEFAULT_THRESHOLD


def warn_on_slowdown(probe: Probe, action: str = "warn", threshold: float = DEFAULT_THRESHOLD) -> EarlyWarning:
    """Add the live early warning to `probe`: once a later epoch is clearly slower than
    epoch 1, `warn` (a line on stderr and a `warning` record), `stop` the run (exit code 5),
    or `profile` the slow epoch with py-spy. Call it before the run starts."""
    listener = EarlyWarning(action, probe.out_dir, probe.write_event, threshold=threshold, clock=probe.clock)
    probe.add_listener(listener)
    return listener


def apply_launch(probe: Probe, config: AttachConfig) -> None:
    """The launch config's options, on a Probe about to start: record where the launcher
    looks, with its stall limit, sampling interval, batch bound, warning and profilers."""
    probe.out_dir = Path(config.run_dir)
    if config.stall_after is not None:
        probe.watchdog.floor_s = config.stall_after
    if config.sample_interval is not None:
        probe.sampler.interval = config.sample_interval
        probe.sampler.budgeted = False  # the user's interval, kept as set
    probe.max_batches = config.max_batches
    if config.on_slowdown:
        warn_on_slowdown(probe, config.on_slowdown)
    if config.profile:
        probe.add_listener(EpochProfiler.from_config(config.profile))

