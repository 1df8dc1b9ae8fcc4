"""What a launcher tells the process it runs, through one environment variable.

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
from pathlib import Path
from typing import Any

from dcnprobe.errors import UsageError

ENV = "DCNPROBE_ATTACH"
SITE_DIR = Path(__file__).resolve().parent / "site"
ON_SLOWDOWN = ("warn", "stop", "profile")


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
            raise UsageError(f"{ENV} is not a dcnprobe attach config: {exc}") from None


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
