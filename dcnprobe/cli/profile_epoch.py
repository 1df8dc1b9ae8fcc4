"""`dcnprobe profile-epoch N [-- CMD]`: profile exactly epoch N, and epoch 1 as the baseline."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import click

from dcnprobe.bisect.search import resolve_auto
from dcnprobe.cli import interruption
from dcnprobe.cli.options import max_batches_option, out_option, settings_options
from dcnprobe.cli.trials import trial_template
from dcnprobe.distributed.layout import rank_dirs
from dcnprobe.harness import launch
from dcnprobe.profiling import report
from dcnprobe.profiling.session import read_profiles
from dcnprobe.profiling.tools import TOOLS
from dcnprobe.runs import read_run
from dcnprobe.settings import Settings


def _tools(text: str) -> tuple[str, ...]:
    chosen = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in chosen if t not in TOOLS]
    if unknown or not chosen:
        raise click.BadParameter(f"choose from {','.join(TOOLS)}, not {text!r}")
    return chosen


@click.command("profile-epoch")
@click.argument("epoch", type=click.IntRange(min=1))
@settings_options
@max_batches_option("stop each epoch after this many batches [default: the whole pass]")
@click.option("--preset", default=None, help="built-in trainer only: hyperparameters [default: phase3-revised]")
@click.option("--data", default=None, help="built-in trainer only: as for dcnprobe train [default: synthetic]")
@click.option("--fault", "faults", multiple=True, metavar="NAME", help="built-in trainer only: plant a slowdown")
@click.option("--tools", default="pyspy,memray,torch", show_default=True, help="profilers to run, comma-separated")
@click.option("--no-baseline", is_flag=True, help="profile epoch N only, not epoch 1 as well")
@out_option(Path("runs/profile"), "run record, profiles and OUT/profile.md")
@click.argument("command_words", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD ARGS...]")
def command(epoch: int, settings: Settings, max_batches: int | None, preset: str | None, data: str | None,
            faults: tuple[str, ...], tools: str, no_baseline: bool, out: Path, command_words: tuple[str, ...]) -> None:
    """Run epochs 1..EPOCH and profile EPOCH (and epoch 1) with py-spy, memray and torch.profiler.

    Runs the built-in trainer, or your own command after `--`, unchanged. Writes
    OUT/profile.md, which compares the two epochs: functions whose share of samples
    grew, allocation sites whose memory grew, operators whose time grew; and links every
    artefact (flame graphs, speedscope, memray HTML, Chrome traces).
    """

    chosen = _tools(tools)
    # A user's script is given only the settings asked for on the command line (compared
    # before device=auto is resolved: the default is not a request).
    defaults = Settings()
    asked = tuple(f.name for f in fields(Settings) if getattr(settings, f.name) != getattr(defaults, f.name))
    settings = resolve_auto(settings)  # an absent device fails here
    template = trial_template(command_words, preset=preset, data=data, faults=faults, epochs=epoch,
                              max_batches=max_batches)
    refused = [name for name in asked if not template.command.takes(name)]
    if refused:
        raise click.UsageError(f"this command cannot be given {', '.join(refused)}: add "
                               f"{' '.join('{' + n + '}' for n in refused)} to it")
    spec = replace(template, settings=settings, applied=asked)
    baseline = None if no_baseline or epoch == 1 else 1
    plan = {str(e): list(chosen) for e in (baseline, epoch) if e is not None}
    out.mkdir(parents=True, exist_ok=True)
    argv, config = spec.process(out, quiet=False, profile={"epochs": plan, "out": str(out / "profiles")})
    click.echo(f"profiling epoch {epoch}" + (f" against epoch {baseline}" if baseline else "")
               + f" with {', '.join(chosen)} -> {out}")
    proc = launch.start(argv, config)
    interruption.keep(f"the run record {out / 'run.jsonl'} and the profiles of epochs already finished in "
                      f"{out / 'profiles'} (no report: dcnprobe profile-epoch {epoch} again to write one)")
    try:
        code = proc.wait()
    except BaseException:
        launch.interrupt(proc)
        raise
    if code != 0:
        click.echo(f"note: the command exited with code {code}; profiling what it recorded", err=True)
    click.echo("writing reports...")
    # A distributed command: every rank profiled itself into RUN/rankN/profiles.
    for directory in list(rank_dirs(out).values()) or [out]:
        path = report.build(read_profiles(directory / "profiles"), read_run(directory), directory, epoch, baseline)
        click.echo(f"written: {path}")
