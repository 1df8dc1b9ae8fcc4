"""Run settings: the knobs that change how a training run executes, not what it learns.

One frozen dataclass, spelled the same everywhere: CLI options (`--num-workers`), KEY=VALUE
assignments (`num_workers=4`), run records, reports and bisect.json. Each field carries
its own parser and help text, so the CLI, the bisect's `--bad/--good` and the record
reader all accept exactly the same values and the defaults are written once, here.

Each field also says how it reaches an unmodified script under `dcnprobe run -- CMD`
(`Reach`): the attach rewrites DataLoader arguments, sets torch's threads, or clears
caches at epoch ends; anything else only through a `{placeholder}` in the command. Every
list of such settings (APPLIED_FROM_OUTSIDE, LOADER_ARGUMENTS, NEEDS_WORKERS) is derived
from the fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from typing import Any

from dcnprobe.errors import UsageError


class SettingsError(UsageError):
    """A setting that cannot be parsed, or a combination that cannot run."""


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_NONE = {"none", "default", ""}
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_CACHE_CLEAR_RE = re.compile(r"^(never|epoch|every:([1-9]\d*))$")


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected true or false")


def _int_parser(minimum: int, optional: bool = False) -> Callable[[str], int | None]:
    def parse(text: str) -> int | None:
        if optional and text.strip().lower() in _NONE:
            return None
        try:
            value = int(text)
        except ValueError:
            raise ValueError("expected an integer" + (" or 'none'" if optional else "")) from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return parse


def _choice_parser(pattern: re.Pattern[str], description: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if not pattern.match(value):
            raise ValueError(f"expected {description}")
        return value

    return parse


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_none(text: str) -> Any:
        return None if text.strip().lower() in _NONE else parse(text)

    return parse_or_none


class Reach(Enum):
    """How a setting reaches an unmodified script (`dcnprobe run -- CMD`)."""

    LOADER = "as a DataLoader argument, rewritten in every DataLoader the script builds"
    THREADS = "as torch.set_num_threads in the training process"
    CACHE_HOOK = "by the attach, clearing caches at epoch ends or every N optimizer steps"
    PLACEHOLDER = "only through a {placeholder} in the command line"


def _setting(default: Any, parse: Callable[[str], Any], help: str, *, reach: Reach = Reach.PLACEHOLDER,
             loader_argument: str | None = None, needs_workers: tuple[Any, str] | None = None) -> Any:
    """`needs_workers`: (its value that is fine with no workers, why others are not)."""
    return field(default=default, metadata={"parse": parse, "help": help, "reach": reach,
                                            "loader_argument": loader_argument, "needs_workers": needs_workers})


@dataclass(frozen=True)
class Settings:
    """How a run executes. Everything here can vary between trials of the harness."""

    device: str = _setting(
        "auto",
        _choice_parser(_DEVICE_RE, "auto, cpu, mps, cuda or cuda:N"),
        "auto (mps, else cuda, else cpu), cpu, mps, cuda or cuda:N",
    )
    num_workers: int = _setting(0, _int_parser(0), "DataLoader worker processes (0: load in the main process)",
                                reach=Reach.LOADER, loader_argument="num_workers")
    persistent_workers: bool = _setting(
        False, _parse_bool, "keep DataLoader workers alive across epochs (needs num_workers > 0)",
        reach=Reach.LOADER, loader_argument="persistent_workers",
        needs_workers=(False, "there are no workers to keep alive"),
    )
    cache_clear: str = _setting(
        "never",
        _choice_parser(_CACHE_CLEAR_RE, "never, epoch or every:N"),
        "release cached memory: never, epoch, or every:N batches (CPU: gc.collect + malloc_trim)",
        reach=Reach.CACHE_HOOK,
    )
    pin_memory: bool = _setting(False, _parse_bool, "DataLoader pin_memory", reach=Reach.LOADER,
                                loader_argument="pin_memory")
    start_method: str | None = _setting(
        None,
        _optional(_choice_parser(re.compile(r"^(fork|spawn|forkserver)$"), "fork, spawn, forkserver or none")),
        "how DataLoader workers start: fork, spawn or forkserver (none: the platform's default, "
        "spawn on macOS, fork on Linux); several worker faults exist under only one of them",
        reach=Reach.LOADER, loader_argument="multiprocessing_context",
        needs_workers=(None, "there are no workers to start"),
    )
    prefetch_factor: int | None = _setting(
        None, _int_parser(1, optional=True), "batches each worker loads ahead (needs num_workers > 0)",
        reach=Reach.LOADER, loader_argument="prefetch_factor", needs_workers=(None, "only workers prefetch"),
    )
    threads: int | None = _setting(
        None, _int_parser(1, optional=True), "torch intra-op threads in the main process (none: torch's default)",
        reach=Reach.THREADS,
    )
    loader: str = _setting(
        "batched",
        _choice_parser(re.compile(r"^(batched|per-sample)$"), "batched or per-sample"),
        "batched: whole batches sliced from array storage; per-sample: __getitem__ per row plus default collate",
    )
    batch_size: int = _setting(4096, _int_parser(1), "rows per training batch")
    seed: int = _setting(42, _int_parser(0), "random seed for initialisation, shuffling and dropout")

    def __post_init__(self) -> None:
        # Every value goes through the same parser as CLI text, so a Settings built in
        # Python is checked (and typed) by exactly the rules the command line uses.
        for f in fields(self):
            object.__setattr__(self, f.name, parse_value(f.name, format_value(getattr(self, f.name))))
        if self.num_workers == 0:
            for name, (off, why) in _NEEDS_WORKERS_WHY.items():
                value = getattr(self, name)
                if value != off:
                    described = f"{name}={format_value(value)}" if isinstance(value, bool) else name
                    raise SettingsError(f"{described} needs num_workers > 0 ({why})")

    # -- conversions -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Settings:
        """Build from a mapping of typed values or strings, rejecting unknown names."""
        parsed = {}
        for name, value in values.items():
            key = canonical_name(name)
            parsed[key] = parse_value(key, value) if isinstance(value, str) else value
        return cls(**parsed)

    def with_changes(self, changes: Mapping[str, Any]) -> Settings:
        """A copy with some settings changed; invalid combinations raise SettingsError."""
        return replace(self, **{canonical_name(k): v for k, v in changes.items()})

    def differences(self, other: Settings) -> dict[str, tuple[Any, Any]]:
        """{name: (mine, theirs)} for every setting that differs, in field order."""
        return {
            f.name: (getattr(self, f.name), getattr(other, f.name))
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        }

    # -- derived views used by the trainer ------------------------------------------------

    @property
    def clear_every_batches(self) -> int | None:
        """N for cache_clear=every:N, else None."""
        return int(self.cache_clear.split(":")[1]) if self.cache_clear.startswith("every:") else None

    @property
    def clear_each_epoch(self) -> bool:
        return self.cache_clear == "epoch"


SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Settings))
REACH: dict[str, Reach] = {f.name: f.metadata["reach"] for f in fields(Settings)}
# Settings the attach applies to an unmodified script from outside; the others reach a
# command only through a placeholder.
APPLIED_FROM_OUTSIDE: tuple[str, ...] = tuple(n for n in SETTING_NAMES if REACH[n] is not Reach.PLACEHOLDER)
# Setting -> the DataLoader constructor argument it replaces.
LOADER_ARGUMENTS: dict[str, str] = {f.name: f.metadata["loader_argument"] for f in fields(Settings)
                                    if REACH[f.name] is Reach.LOADER}
_NEEDS_WORKERS_WHY = {f.name: f.metadata["needs_workers"] for f in fields(Settings) if f.metadata["needs_workers"]}
# Settings the DataLoader refuses without workers -> their value that needs none.
NEEDS_WORKERS: dict[str, Any] = {name: off for name, (off, _) in _NEEDS_WORKERS_WHY.items()}


def canonical_name(name: str) -> str:
    """Accept `num-workers` as well as `num_workers`; reject names that are not settings."""
    key = name.strip().replace("-", "_")
    if key not in SETTING_NAMES:
        raise SettingsError(f"unknown setting '{name}' (known: {', '.join(SETTING_NAMES)})")
    return key


def setting_help(name: str) -> str:
    return _field(name).metadata["help"]


def parse_value(name: str, text: str) -> Any:
    """Parse one setting's value from text, with the field's own parser."""
    key = canonical_name(name)
    try:
        return _field(key).metadata["parse"](text)
    except ValueError as exc:
        raise SettingsError(f"{key}={text!r}: {exc}") from None


def parse_assignment(text: str) -> tuple[str, Any]:
    """'num_workers=4' -> ('num_workers', 4)."""
    if "=" not in text:
        raise SettingsError(f"expected KEY=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    key = canonical_name(name)
    return key, parse_value(key, value)


def parse_assignments(texts: Iterable[str]) -> dict[str, Any]:
    return dict(parse_assignment(t) for t in texts)


def format_value(value: Any) -> str:
    """The text form that parse_value reads back: true/false, none, numbers, names."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return str(value)


def describe(values: Mapping[str, Any]) -> str:
    """'num_workers=4, persistent_workers=true': the settings in `values` (a record's header
    `settings`) that differ from their defaults, in field order."""
    defaults = Settings()
    return ", ".join(f"{name}={format_value(values[name])}" for name in SETTING_NAMES
                     if name in values and values[name] != getattr(defaults, name))


def cli_flag(name: str) -> str:
    """The command-line option of a setting: num_workers -> --num-workers."""
    return "--" + canonical_name(name).replace("_", "-")


def to_cli_args(settings: Settings) -> list[str]:
    """Options that reproduce `settings` on the command line of `dcnprobe train`."""
    args: list[str] = []
    for f in fields(settings):
        value = getattr(settings, f.name)
        flag = cli_flag(f.name)
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, format_value(value)]
    return args


def _field(name: str):
    return next(f for f in fields(Settings) if f.name == name)
