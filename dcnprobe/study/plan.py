"""What a study is: presets x seeds, each a trial of the built-in trainer, and the
criteria its results are judged by (the seed report's, by default)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from dcnprobe.command import Command
from dcnprobe.errors import UsageError
from dcnprobe.harness.spec import TrialSpec
from dcnprobe.settings import Settings

DEFAULT_PRESETS = ("phase1", "phase3", "phase3-revised")
FIRST_SEED = 42  # the report's runs used seed 42; `--seeds 5` means 42..46


@dataclass(frozen=True)
class Criteria:
    """The seed report's success criteria (phase3-revised-report.txt), each adjustable.

    The report asks for val AUC >= 0.575 and a train-val gap of 0.03-0.12, yet ticks its
    own gap of -0.0549 as healthy ("negative = good generalization"): a negative gap
    counts as healthy unless `negative_gap_ok` is off. It wants the best epoch to move
    from 1 to 2-4. It names no number for the gate: gate bounds are judged only when given.
    """

    min_val_auc: float = 0.575
    gap_low: float = 0.03
    gap_high: float = 0.12
    negative_gap_ok: bool = True
    best_epoch_low: int = 2
    best_epoch_high: int = 4
    gate_low: float | None = None
    gate_high: float | None = None

    def gap_healthy(self, gap: float) -> bool:
        return self.gap_low <= gap <= self.gap_high or (self.negative_gap_ok and gap < 0)


@dataclass(frozen=True)
class StudyConfig:
    presets: tuple[str, ...] = DEFAULT_PRESETS
    seeds: tuple[int, ...] = tuple(range(FIRST_SEED, FIRST_SEED + 5))
    epochs: int = 5
    max_batches: int | None = None  # per epoch; None: the whole training split
    data: str = "synthetic"
    settings: Settings = field(default_factory=lambda: Settings(device="cpu"))
    criteria: Criteria = field(default_factory=Criteria)

    def __post_init__(self) -> None:
        if not self.presets:
            raise UsageError("a study needs at least one preset")
        if len(set(self.presets)) != len(self.presets) or len(set(self.seeds)) != len(self.seeds):
            raise UsageError("presets and seeds must not repeat")
        if not self.seeds:
            raise UsageError("a study needs at least one seed")


@dataclass(frozen=True)
class StudyTrial:
    preset: str
    seed: int
    spec: TrialSpec

    @property
    def label(self) -> str:
        return f"{self.preset} seed {self.seed}"


def parse_seeds(text: str) -> tuple[int, ...]:
    """'5' -> five seeds from 42; '1,7,42' -> those seeds."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--seeds expects a count or a list of integers, got {text!r}") from None
    if "," not in text and len(values) == 1:
        if values[0] < 1:
            raise UsageError(f"--seeds must be at least 1, got {values[0]}")
        return tuple(range(FIRST_SEED, FIRST_SEED + values[0]))
    if not values or min(values) < 0:
        raise UsageError(f"--seeds expects non-negative integers, got {text!r}")
    return tuple(values)


def parse_presets(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def plan(config: StudyConfig, command_for: Callable[[str], Command]) -> list[StudyTrial]:
    """One checkpointed trial per (preset, seed), presets outermost: `command_for(preset)`
    is the built-in trainer's command for that preset (dcnprobe.cli.train.builtin_command)."""
    trials = []
    for preset in config.presets:
        command = command_for(preset)
        for seed in config.seeds:
            spec = TrialSpec(command=command, settings=replace(config.settings, seed=seed), epochs=config.epochs,
                             max_batches=config.max_batches, checkpoints=True)
            trials.append(StudyTrial(preset, seed, spec))
    return trials


def describe(config: StudyConfig) -> Sequence[str]:
    batches = f"{config.max_batches} batches" if config.max_batches else "the whole split"
    return [f"presets: {', '.join(config.presets)}", f"seeds: {', '.join(map(str, config.seeds))}",
            f"{config.epochs} epochs x {batches} per trial, data `{config.data}`"]
