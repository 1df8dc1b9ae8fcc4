"""dcnprobe: find out why a PyTorch training run gets slower epoch after epoch.

The public API is imported lazily, so that light modules (settings, the probe interface,
device backends) can be used by the model package without pulling in pandas or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The public API: what user loops, the built-in trainer (model/) and other tools may use.
_EXPORTS = {
    "Settings": "dcnprobe.settings",
    "UsageError": "dcnprobe.errors",
    "NullProbe": "dcnprobe.hooks",
    "ProbeLike": "dcnprobe.hooks",
    "ProbeListener": "dcnprobe.hooks",
    "Probe": "dcnprobe.probe",
    "warn_on_slowdown": "dcnprobe.launched",
    "DeviceBackend": "dcnprobe.devices",
    "backend_for": "dcnprobe.devices",
    "resolve_device": "dcnprobe.devices",
    "read_run": "dcnprobe.runs",
    "analyze_run": "dcnprobe.analysis",
    # Loops with no DataLoader, probed from outside: "an epoch ends here". A no-op otherwise.
    "mark_epoch": "dcnprobe.attach.active",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dcnprobe' has no attribute {name!r}")
