"""Click options generated from the Settings dataclass, so the CLI cannot drift from it.

`--num-workers` is the field `num_workers` with that field's parser, help and default;
a bool field becomes `--persistent-workers/--no-persistent-workers`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import click

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
