"""The options that several commands share, defined once so that they cannot drift.

Settings options are generated from the Settings dataclass: `--num-workers` is the field
`num_workers` with that field's parser, help and default; a bool field becomes
`--persistent-workers/--no-persistent-workers`. The rest (--out, --epochs, --max-batches,
--stall-after, ...) are factories below, with one limit each.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import click

from dcnprobe.errors import UsageError
from dcnprobe.settings import (
    Settings,
    SettingsError,
    cli_flag,
    format_value,
    parse_value,
    setting_help,
)


class SettingType(click.ParamType):
    """A click type that parses with a Settings field's own parser."""

    def __init__(self, name: str) -> None:
        self.name = name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return parse_value(self.name, value)
        except SettingsError as exc:
            self.fail(str(exc), param, ctx)


def settings_options(command: Callable) -> Callable:
    """Add one option per Settings field; the command receives `settings=Settings(...)`."""
    defaults = Settings()
    for f in reversed(fields(Settings)):
        flag = cli_flag(f.name)
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            decl = click.option(f"{flag}/--no-{flag[2:]}", f.name, default=default, show_default=True, help=setting_help(f.name))
        else:
            decl = click.option(
                flag, f.name, type=SettingType(f.name), default=format_value(default),
                show_default=True, help=setting_help(f.name),
            )
        command = decl(command)

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        values = {f.name: kwargs.pop(f.name) for f in fields(Settings)}
        return command(settings=Settings(**values), **kwargs)

    return wrapper


# One option set: each option below means the same thing, with the same limits, in every
# command that takes it. Where a command needs a different limit or default, its help says
# why (the trial commands: a trial compares later epochs with epoch 1).

MIN_STALL_AFTER_S = 1.0  # the stall watchdog looks twice a second; less cannot be honoured
MIN_SAMPLE_INTERVAL_S = 0.01
MIN_TRIAL_BUDGET_S = 10.0
MIN_TRIAL_EPOCHS = 2  # epoch 1 is the baseline that later epochs are compared with
MIN_TRIAL_BATCHES = 10  # a ratio needs batches after the warm-up ones


def check_out_dir(path: Path) -> Path:
    """An output directory that exists, or can be made, and can be written: checked before
    any work, so that a bad --out is one line rather than a traceback after training.
    Directories made to check are removed again; the command makes them when it writes."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{path} is a file, not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"{path} is not writable")
        return path
    made: list[Path] = []
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        for directory in reversed(missing):
            directory.mkdir()
            made.append(directory)
    except OSError as exc:
        parent = next((p for p in path.parents if p.exists()), Path("."))
        why = f"{parent} is a file" if not parent.is_dir() else f"{parent}: {exc.strerror or exc}"
        raise UsageError(f"{path} cannot be created ({why})") from None
    finally:
        for directory in reversed(made):
            with contextlib.suppress(OSError):
                directory.rmdir()
    return path


class OutDir(click.ParamType):
    """--out: a directory that can be written (see check_out_dir)."""

    name = "directory"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return check_out_dir(Path(value))
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


def out_option(default: Path | None, help: str) -> Callable:
    return click.option("--out", type=OutDir(), default=default, show_default=default is not None, help=help)


def epochs_option(help: str = "end the run cleanly after this many epochs", default: int | None = None,
                  show_default: bool = False) -> Callable:
    return click.option("--epochs", type=click.IntRange(min=1), default=default, show_default=show_default, help=help)


def max_batches_option(help: str = "end each pass over the training DataLoader after this many batches "
                                   "[default: the whole pass]") -> Callable:
    return click.option("--max-batches", type=click.IntRange(min=1), default=None, help=help)


def trial_epochs_option() -> Callable:
    return click.option("--epochs", type=click.IntRange(min=MIN_TRIAL_EPOCHS), default=MIN_TRIAL_EPOCHS,
                        show_default=True,
                        help=f"epochs per trial (at least {MIN_TRIAL_EPOCHS}, unlike the other commands' 1: epoch 1 "
                             "is the baseline the later ones are compared with; the default is the least that answers)")


def trial_max_batches_option(default: int) -> Callable:
    return click.option("--max-batches", type=click.IntRange(min=MIN_TRIAL_BATCHES), default=default,
                        show_default=True,
                        help=f"batches per epoch in each trial (at least {MIN_TRIAL_BATCHES}, unlike the other "
                             "commands' 1: a ratio needs batches after warm-up; a default, not the whole pass, so "
                             "that a trial takes minutes)")


def stall_after_option(default: float | None, default_text: str = "") -> Callable:
    return click.option("--stall-after", type=click.FloatRange(min=MIN_STALL_AFTER_S), default=default,
                        show_default=default is not None,
                        help=f"declare a stall after this many seconds without a finished batch (at least "
                             f"{MIN_STALL_AFTER_S:g}: the watchdog looks twice a second){default_text}")


def default_interval_text() -> str:
    """The probe's own sampling interval, for --sample-interval's help. The sampler (and
    psutil, 35 ms) is imported here, by the commands that start a probe, not by every
    command that imports these options."""
    from dcnprobe.sampler import DEFAULT_INTERVAL, MIN_EPOCH_SAMPLES, SAMPLER_CPU_SHARE

    return (f" [default: {DEFAULT_INTERVAL:g}; in a long epoch, once it has {MIN_EPOCH_SAMPLES} samples, "
            f"longer, to keep the sampler under {SAMPLER_CPU_SHARE:.1%} of a core]")


def sample_interval_option(default: float | None, default_text: str = "") -> Callable:
    return click.option("--sample-interval", type=click.FloatRange(min=MIN_SAMPLE_INTERVAL_S), default=default,
                        show_default=default is not None, help=f"seconds between memory samples{default_text}")


def trial_budget_option(default: float, why: str = "") -> Callable:
    return click.option("--trial-budget", type=click.FloatRange(min=MIN_TRIAL_BUDGET_S), default=default,
                        show_default=True, help=f"wall-time limit of one trial, seconds{why}")
