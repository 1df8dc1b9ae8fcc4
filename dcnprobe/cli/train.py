"""The built-in trainer as a command: `dcnprobe train`, `dcnprobe faults`, and the command
line that the harness runs when no `-- CMD` is given.

This is the one module of dcnprobe that imports `model/`, and only inside functions: the
gated DCNv3 trainer is one client of the toolkit, like any user's script.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import click

from dcnprobe.cli import interruption
from dcnprobe.cli.options import (
    check_out_dir,
    default_interval_text,
    epochs_option,
    max_batches_option,
    out_option,
    sample_interval_option,
    settings_options,
    stall_after_option,
)
from dcnprobe.cli.progress import BatchProgress
from dcnprobe.command import Command
from dcnprobe.contract import ON_SLOWDOWN, AttachConfig, Exit
from dcnprobe.devices import resolve_device
from dcnprobe.errors import UsageError
from dcnprobe.executables import python_module
from dcnprobe.hooks import NullProbe
from dcnprobe.launched import warn_on_slowdown
from dcnprobe.probe import Probe
from dcnprobe.settings import Settings, format_value
from dcnprobe.stall import DEFAULT_STALL_FACTOR, DEFAULT_STALL_FLOOR_S
from dcnprobe.timers import SYNC_MODES

DEFAULT_PRESET = "phase3-revised"  # model.presets.DEFAULT_PRESET, checked by a test
DEFAULT_DATA = "synthetic"


def job_options(command):
    """--preset, --epochs, --max-batches, --data, --fault: what a built-in training run is."""
    decls = [
        click.option("--preset", default=DEFAULT_PRESET, show_default=True,
                     help="hyperparameters from the report's comparison table: phase1, phase3, phase3-revised"),
        epochs_option("epochs to train [default: the preset's, 5]"),
        max_batches_option("stop each epoch after this many batches [default: the whole split]"),
        click.option("--data", default=DEFAULT_DATA, show_default=True,
                     help="synthetic[:hard|:key=value,...], or a .tsv (Criteo), .csv or .parquet file"),
        click.option("--fault", "faults", multiple=True, metavar="NAME",
                     help="plant a slowdown scenario (repeatable); 'dcnprobe faults' lists them"),
    ]
    for decl in reversed(decls):
        command = decl(command)
    return command


def builtin_command(preset: str = DEFAULT_PRESET, data: str = DEFAULT_DATA, faults: Sequence[str] = ()) -> Command:
    """`python -m dcnprobe train --preset ... --data ... --fault ...`, checked here (an unknown
    preset or fault, a missing data file) so that it fails before any trial runs."""
    import dcnprobe.model as model
    from dcnprobe.model.data.source import load_data
    from dcnprobe.model.faults import resolve_faults
    from dcnprobe.model.presets import get_preset

    get_preset(preset)
    resolve_faults(faults)
    load_data(data)  # generates (and caches) the synthetic set once, for every trial
    argv = [*python_module("dcnprobe"), "train", "--preset", preset, "--data", data]
    for fault in faults:
        argv += ["--fault", fault]
    return Command(tuple(argv), builtin=True, code_roots=(str(Path(model.__file__).parent),))

COLUMNS = ("epoch", "train_loss", "val_loss", "train_auc", "val_auc", "gap", "gate_mean", "gate_range", "wall_s", "batches")


@click.command("train")
@settings_options
@job_options
@out_option(None, "run directory: run.jsonl, summary.json, checkpoints [default: runs/train-TIME]")
@click.option("--resume", is_flag=True, help="continue from the last checkpoint in --out")
@click.option("--checkpoints/--no-checkpoints", default=True, show_default=True,
              help="save a checkpoint per epoch under --out/checkpoints")
@click.option("--no-probe", is_flag=True, help="run the identical loop with no instrumentation")
@click.option("--sync", type=click.Choice(SYNC_MODES), default="batch", show_default=True,
              help="device sync: once per batch, after every phase, or never")
@sample_interval_option(None, default_interval_text())
@stall_after_option(DEFAULT_STALL_FLOOR_S, f"; or {DEFAULT_STALL_FACTOR:g}x the median batch time, if longer")
@click.option("--on-slowdown", type=click.Choice(ON_SLOWDOWN), default="warn", show_default=True,
              help="once a later epoch is clearly slower than epoch 1: warn on stderr, stop the run "
                   f"(exit code {Exit.SLOW:d}), or profile the slow epoch with py-spy into OUT/profile.md")
@click.option("--quiet", is_flag=True, help="no progress lines")
def command(settings: Settings, preset: str, epochs: int | None, max_batches: int | None, data: str,
            faults: tuple[str, ...], out: Path | None, resume: bool, checkpoints: bool, no_probe: bool, sync: str,
            sample_interval: float | None, stall_after: float, on_slowdown: str, quiet: bool) -> None:
    """Train the gated DCNv3 model and print the report's per-epoch table."""
    from dcnprobe.model.data.source import load_data
    from dcnprobe.model.faults import resolve_faults
    from dcnprobe.model.plugins import configured
    from dcnprobe.model.trainer import TrainJob, fit

    plugins = resolve_faults(faults)
    settings = configured(settings, plugins)  # as fit() will see them: the device to probe, the table header
    device = resolve_device(settings.device)  # an absent device or bad data fails before any work
    load_data(data)
    out = out or check_out_dir(Path("runs") / time.strftime("train-%Y%m%d-%H%M%S"))
    job = TrainJob(settings=settings, preset=preset, epochs=epochs, max_batches=max_batches, data=data,
                   out=out, resume=resume, checkpoints=checkpoints)
    probe = NullProbe() if no_probe else Probe(out, device=device, sync=sync, sample_interval=sample_interval,
                                                stall_floor_s=stall_after)
    if not no_probe and AttachConfig.from_env() is None:  # under a launcher, its config says (dcnprobe.launched)
        warn_on_slowdown(probe, on_slowdown)
    progress = None if quiet else BatchProgress()
    interruption.keep(_kept(out, no_probe, checkpoints))

    click.echo(f"training gated DCNv3, preset {preset}, {job.hyperparams.epochs} epochs on {device}"
               f"{', faults: ' + ', '.join(faults) if faults else ''} -> {out}")
    click.echo(_row(COLUMNS))

    def epoch_done(metrics) -> None:
        if progress:
            progress.clear()
        click.echo(_row(_cells(metrics)))

    result = fit(job, probe=probe, plugins=plugins, on_batch=progress, on_epoch=epoch_done)
    if progress:
        progress.clear()
    click.echo(f"best epoch: {result.best_epoch}; summary: {out / 'summary.json'}"
               + ("" if no_probe else f"; records: {out / 'run.jsonl'}"))


def _kept(out: Path, no_probe: bool, checkpoints: bool) -> str:
    """What an interrupted training run leaves behind."""
    parts = [] if no_probe else [f"the run record {out / 'run.jsonl'} (every finished batch)"]
    if checkpoints:
        parts.append(f"a checkpoint per finished epoch (--resume --out {out} continues)")
    return " and ".join(parts) or "nothing (no probe, no checkpoints)"


def _cells(m) -> tuple[str, ...]:
    return (str(m.epoch), f"{m.train_loss:.4f}", f"{m.val_loss:.4f}", f"{m.train_auc:.4f}", f"{m.val_auc:.4f}",
            f"{m.gap:+.4f}", f"{m.gate_mean:.4f}", f"[{m.gate_min:.3f}, {m.gate_max:.3f}]", f"{m.wall_s:.1f}",
            str(m.batches))


def _row(cells) -> str:
    widths = (5, 10, 9, 9, 8, 8, 9, 16, 7, 7)
    return "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))


@click.command("faults")
def faults_command() -> None:
    """List the slowdown scenarios that --fault plants in the built-in trainer."""
    from dcnprobe.model.faults import FAULTS

    width = max(len(name) for name in FAULTS)
    for name, fault in FAULTS.items():
        needs = " ".join(f"{k}={format_value(v)}" for k, v in fault.shows_with.items())
        click.echo(f"{name.ljust(width)}  cause {fault.cause}: {fault.summary}" + (f" [shows with {needs}]" if needs else ""))
    click.echo("\nYour own: --fault path/to/file.py:Class or --fault package.module:Class "
               "(a dcnprobe.model.plugins.TrainerPlugin subclass).")


def check_builtin_only(command_words: Sequence[str], **given: object) -> None:
    """Options that describe the built-in trainer make no sense with `-- CMD`."""
    used = [name for name, value in given.items() if value]
    if command_words and used:
        flags = ", ".join("--" + ("fault" if n == "faults" else n.replace("_", "-")) for n in used)
        raise UsageError(f"{flags} describe the built-in trainer; with -- CMD give your script its own options")
