"""Slowdown scenarios: `--fault NAME`, repeatable, for `dcnprobe train` and every command
that runs trials. Each reproduces one real mechanism and declares its cause id.

NAME is a built-in scenario, or a plugin of your own as `package.module:Class` or
`path/to/file.py:Class` (a dcnprobe.model.plugins.TrainerPlugin subclass, built with no
arguments), so slowdowns that dcnprobe has never seen can be planted too.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from dcnprobe.model.faults.base import Fault
from dcnprobe.model.faults.main_process import (
    CacheThrash,
    GraphRetention,
    HeapGrowth,
    MemoryPressure,
    UnboundedMetric,
)
from dcnprobe.model.faults.platform import MemoryKnee, ShapeRecompile, SpawnRespawn
from dcnprobe.model.faults.workers import WorkerCopyOnRead, WorkerHang, WorkerStall
from dcnprobe.model.plugins import TrainerPlugin

from dcnprobe import UsageError

FAULTS: dict[str, type[Fault]] = {
    cls.name: cls
    for cls in (GraphRetention, UnboundedMetric, HeapGrowth, WorkerCopyOnRead, WorkerStall, MemoryPressure,
                CacheThrash, WorkerHang, SpawnRespawn, ShapeRecompile, MemoryKnee)
}

__all__ = ["FAULTS", "Fault", "resolve_faults"]


def resolve_faults(names: Sequence[str]) -> list[TrainerPlugin]:
    return [_resolve(name) for name in names]


def _resolve(name: str) -> TrainerPlugin:
    if name in FAULTS:
        return FAULTS[name]()
    if ":" not in name:
        raise UsageError(f"unknown fault '{name}' (built in: {', '.join(FAULTS)}; or module:Class, file.py:Class)")
    where, _, attr = name.rpartition(":")
    try:
        module = _load_file(Path(where)) if where.endswith(".py") else importlib.import_module(where)
        cls = getattr(module, attr)
    except (ImportError, AttributeError, OSError, SyntaxError) as exc:
        raise UsageError(f"cannot load fault '{name}': {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, TrainerPlugin)):
        raise UsageError(f"fault '{name}' is not a dcnprobe.model.plugins.TrainerPlugin subclass")
    return cls()


def _load_file(path: Path):
    if not path.is_file():
        raise OSError(f"no such file: {path}")
    spec = importlib.util.spec_from_file_location(f"dcnprobe_fault_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
