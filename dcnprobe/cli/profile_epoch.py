"""`dcnprobe profile-epoch N`: profile exactly epoch N, and epoch 1 as the baseline."""

from __future__ import annotations

from pathlib import Path

import click

from dcnprobe.cli.options import job_options, settings_options
from dcnprobe.cli.progress import BatchProgress
from dcnprobe.settings import Settings


def _tools(text: str) -> tuple[str, ...]:
    from dcnprobe.profiling.tools import TOOLS

    chosen = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in chosen if t not in TOOLS]
    if unknown or not chosen:
        raise click.BadParameter(f"choose from {','.join(TOOLS)}, not {text!r}")
    return chosen


@click.command("profile-epoch")
@click.argument("epoch", type=click.IntRange(min=1))
@settings_options
@job_options
@click.option("--tools", default="pyspy,memray,torch", show_default=True, help="profilers to run, comma-separated")
@click.option("--no-baseline", is_flag=True, help="profile epoch N only, not epoch 1 as well")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/profile"),
              show_default=True)
@click.option("--quiet", is_flag=True, help="no progress lines")
def command(epoch: int, settings: Settings, preset: str, epochs: int | None, max_batches: int | None, data: str,
            faults: tuple[str, ...], tools: str, no_baseline: bool, out: Path, quiet: bool) -> None:
    """Train epochs 1..EPOCH and profile EPOCH (and epoch 1) with py-spy, memray and torch.profiler.

    Writes OUT/profile.md, which compares the two epochs: functions whose share of
    samples grew, allocation sites whose memory grew, operators whose time grew; and
    links every artefact (flame graphs, speedscope, memray HTML, Chrome traces).
    """
    from dcnprobe.devices import resolve_device
    from model.faults import resolve_faults
    from dcnprobe.probe import Probe
    from dcnprobe.profiling import report
    from dcnprobe.profiling.session import ProfilingPlugin
    from model.data.source import load_data
    from model.plugins import configured
    from model.trainer import TrainJob, fit

    if epochs is not None and epochs != epoch:
        raise click.BadParameter(f"profile-epoch trains exactly {epoch} epochs; leave --epochs out")
    chosen = _tools(tools)
    plugins = resolve_faults(faults)
    settings = configured(settings, plugins)  # as fit() will see them: the device to probe, the table header
    device = resolve_device(settings.device)
    load_data(data)
    baseline = None if no_baseline or epoch == 1 else 1
    plan = {e: chosen for e in (baseline, epoch) if e is not None}
    profiler = ProfilingPlugin(plan, out / "profiles", warn=lambda line: click.echo(f"note: {line}", err=True))
    job = TrainJob(settings=settings, preset=preset, epochs=epoch, max_batches=max_batches, data=data, out=out,
                   checkpoints=False)
    click.echo(f"profiling epoch {epoch}" + (f" against epoch {baseline}" if baseline else "")
               + f" with {', '.join(chosen)} on {device} -> {out}")
    progress = None if quiet else BatchProgress()
    fit(job, probe=Probe(out, device=device), plugins=[*plugins, profiler], on_batch=progress,
        on_epoch=lambda m: progress.clear() if progress else None)
    click.echo("writing reports...")
    path = report.build(profiler, out, epoch, baseline)
    click.echo(f"written: {path}")
