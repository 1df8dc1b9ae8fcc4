"""Settings applied to an unmodified script from outside, and what each took effect as.

DataLoader settings (num_workers, persistent_workers, pin_memory, prefetch_factor,
start_method) replace the script's own constructor arguments, for every DataLoader it
builds; threads is torch's intra-op thread count in the training process; cache_clear is
applied by the agent at epoch ends or every N optimizer steps. Only settings that the
launcher names are touched. A setting that cannot take effect (persistent workers on a
loader with no workers, a loader setting in a script that builds no DataLoader) is
reported with the reason, never dropped in silence, and never crashes the script.
"""

from __future__ import annotations

import inspect
import multiprocessing
from collections.abc import Mapping
from typing import Any

from dcnprobe.settings import (
    APPLIED_FROM_OUTSIDE,
    LOADER_ARGUMENTS,
    NEEDS_WORKERS,
    format_value,
    parse_value,
)

# The DataLoader refuses these arguments with no workers; their "off" values are always accepted.
ARGUMENTS_NEEDING_WORKERS = {LOADER_ARGUMENTS[name]: off for name, off in NEEDS_WORKERS.items()}


class Overrides:
    def __init__(self, requested: Mapping[str, Any]) -> None:
        # Launchers pass values as text (format_value) or typed; both mean the same.
        self.wanted: dict[str, Any] = {}
        self.not_applied: dict[str, str] = {}
        for name, value in requested.items():
            if name not in APPLIED_FROM_OUTSIDE:
                self.not_applied[name] = "not a setting the attach can apply from outside (use a {placeholder})"
                continue
            self.wanted[name] = parse_value(name, value) if isinstance(value, str) else value
        self.loaders: list[dict[str, Any]] = []  # what each DataLoader was built with, in order
        self.adjusted: list[str] = []  # the script's own arguments changed to fit ours, and why
        self.script_threads: list[int] = []  # torch.set_num_threads calls of the script, overridden

    @property
    def loader_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.wanted.items() if k in LOADER_ARGUMENTS}

    def rewrite_loader_arguments(self, arguments: dict[str, Any]) -> None:
        """Replace a DataLoader's constructor arguments (inspect.BoundArguments.arguments,
        defaults included) with the wanted settings, keeping the combination valid."""
        number = len(self.loaders) + 1
        workers = self.wanted.get("num_workers", arguments.get("num_workers", 0))
        for setting, argument in LOADER_ARGUMENTS.items():
            if setting not in self.wanted:
                continue
            value = self.wanted[setting]
            if argument in ARGUMENTS_NEEDING_WORKERS and workers == 0 and value != ARGUMENTS_NEEDING_WORKERS[argument]:
                self.adjusted.append(f"{setting}={format_value(value)} not applied to DataLoader #{number}: "
                                     "it has num_workers=0")
                continue
            arguments[argument] = value
        if workers == 0:  # the script's own worker options would now be refused
            for argument, off in ARGUMENTS_NEEDING_WORKERS.items():
                if arguments.get(argument, off) != off and "num_workers" in self.wanted:
                    self.adjusted.append(f"DataLoader #{number}: the script's {argument}="
                                         f"{_text(arguments[argument])} dropped, num_workers=0 from outside")
                    arguments[argument] = off

    def loader_built(self, loader: Any) -> dict[str, Any]:
        context = loader.multiprocessing_context if loader.num_workers > 0 else None
        built = {
            "loader": len(self.loaders) + 1,
            "dataset": type(loader.dataset).__name__,
            "batch_size": loader.batch_size,
            "num_workers": loader.num_workers,
            "persistent_workers": loader.persistent_workers,
            "pin_memory": loader.pin_memory,
            "prefetch_factor": loader.prefetch_factor,
            # None: the platform's default; `effective` says which that is.
            "start_method": context.get_start_method() if context is not None else None,
            "effective_start_method": (context or multiprocessing.get_context()).get_start_method()
            if loader.num_workers > 0 else None,
        }
        self.loaders.append(built)
        return built

    def observed(self, built: Mapping[str, Any] | None, threads: int) -> dict[str, Any]:
        """The run's settings as they took effect, in Settings' names: the training loader's
        arguments, and the thread count and cache clearing when they were given."""
        observed: dict[str, Any] = {}
        if built is not None:
            observed.update({k: built[k] for k in LOADER_ARGUMENTS})
        if "threads" in self.wanted:
            observed["threads"] = threads
        observed["cache_clear"] = self.wanted.get("cache_clear", "never")
        return observed

    def summary(self, loaders_seen: bool) -> dict[str, Any]:
        not_applied = dict(self.not_applied)
        if not loaders_seen:
            for name in self.loader_settings:
                not_applied[name] = "the script built no DataLoader"
        else:
            for name, value in self.loader_settings.items():
                argument = LOADER_ARGUMENTS[name]
                if not any(_matches(built, name, value) for built in self.loaders):
                    not_applied[name] = f"no DataLoader accepted {name}={format_value(value)}" + (
                        f" ({argument} needs num_workers > 0)" if argument in ARGUMENTS_NEEDING_WORKERS else "")
        applied = {k: v for k, v in self.wanted.items() if k not in not_applied}
        return {"requested": self.wanted, "applied": applied, "not_applied": not_applied,
                "adjusted": self.adjusted, "script_threads_overridden": self.script_threads,
                "loaders": self.loaders}


def bind_loader_arguments(init: Any, loader: Any, args: tuple, kwargs: dict) -> inspect.BoundArguments:
    bound = inspect.signature(init).bind(loader, *args, **kwargs)
    bound.apply_defaults()
    return bound


def _matches(built: Mapping[str, Any], name: str, value: Any) -> bool:
    return built.get(name) == value


def _text(value: Any) -> str:
    return value.get_start_method() if hasattr(value, "get_start_method") else format_value(value)
