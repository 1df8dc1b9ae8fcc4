"""The contract between dcnprobe and the processes it starts: what a launcher tells the
process it runs (one environment variable), and every exit code dcnprobe's processes use.
At the bottom of the layers: the harness, the CLI, the attach and the probe all read it.

`dcnprobe run`, the harness's trials and `profile-epoch` all start a command in a fresh
process and configure the probe inside it from outside, with no change to the script:
the attach directory goes first on the child's PYTHONPATH (its `sitecustomize` starts the
probe), and `DCNPROBE_ATTACH` carries this config as JSON. A script that already uses the
Probe API reads the same config, so the two ways of probing behave alike.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

ENV = "DCNPROBE_ATTACH"
SITE_DIR = Path(__file__).resolve().parent / "attach" / "site"
ON_SLOWDOWN = ("warn", "stop", "profile")


class Exit(IntEnum):
    """How a dcnprobe process ends. 0 is a verdict of any kind (a culprit, no slowdown,
    inconclusive); CI must not read 4 or 5 as success."""

    OK = 0
    USAGE = 2  # bad input: one line, never a traceback
    STALLED = 3  # the probe found the run hung and ended it (stacks beside the record)
    UNMEASURED = 4  # bisect/sweep: the bad side could not be measured at all (every trial crashed or timed out)
    SLOW = 5  # the probe ended a run it found slow (on_slowdown=stop)
    INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C, what a shell reports
    TERMINATED = 143  # 128 + SIGTERM: a scheduler's time limit, `kill`


@dataclass(frozen=True)
class AttachConfig:
    run_dir: str
    # Settings to apply from outside, by name (num_workers, persistent_workers, pin_memory,
    # prefetch_factor, start_method, threads, cache_clear); only those given are applied.
    settings: dict[str, Any] = field(default_factory=dict)
    max_batches: int | None = None  # per training pass, then the pass ends early
    epochs: int | None = None  # after this many training passes the run ends cleanly
    epoch_every: int | None = None  # loops with no DataLoader: an epoch every N optimizer steps
    stall_after: float | None = None  # seconds without a batch before the run is declared stalled
    on_slowdown: str = "warn"
    # {"epochs": {"1": ["pyspy", ...], "3": [...]}, "out": DIR}: profilers per epoch
    profile: dict[str, Any] | None = None
    sample_interval: float | None = None
    # One launch: the first process of it to start training claims run_dir under this id
    # (dcnprobe.attach.claim), so that nested Python processes and workers do not record.
    launch_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def to_env(self) -> dict[str, str]:
        return {ENV: json.dumps(asdict(self), separators=(",", ":"))}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AttachConfig | None:
        text = (os.environ if environ is None else environ).get(ENV)
        if not text:
            return None
        try:
            return cls(**json.loads(text))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"{ENV} is not a dcnprobe attach config: {exc}") from None


def launch_env(config: AttachConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process with the probe attached: the attach site first
    on PYTHONPATH (its sitecustomize chain-loads any other one), the config, and
    unbuffered output so that a killed run's log is complete."""
    env = dict(os.environ if base is None else base)
    paths = [str(SITE_DIR), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(config.to_env())
    return env
