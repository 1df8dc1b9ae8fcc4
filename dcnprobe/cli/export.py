"""`dcnprobe export RUN --format chrome [--out FILE]`: the run's records as a Chrome trace
(Perfetto, chrome://tracing): RUN/rankN/trace.json per rank of a distributed run, and one
merged trace of every rank (RUN/trace.json, or FILE)."""

from __future__ import annotations

from pathlib import Path

import click

from dcnprobe.export.chrome import export_run


@click.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["chrome"]), default="chrome", show_default=True,
              help="chrome: Trace Event JSON, opened by Perfetto and chrome://tracing")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="the merged trace [default: RUN_DIR/trace.json]; a name ending in .gz is compressed")
@click.option("--with-trace", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="a torch.profiler Chrome trace of the same run to merge in, on the same clock")
def command(run_dir: Path, fmt: str, out: Path | None, with_trace: Path | None) -> None:
    """Write a run's records as a trace: batches with their phases, epochs, validation
    passes, warnings, and memory and CPU counters for the main process and every
    DataLoader worker, one row per rank and per worker, on the unix clock."""

    result = export_run(run_dir, out, with_trace)
    size = result.merged.stat().st_size
    rows = result.rows
    click.echo(f"written: {result.merged} ({size / 1e6:.2f} MB, {result.events} events; {rows['processes']} "
               f"processes, {rows['rows']} rows: {rows['slice_tracks']} slice tracks, "
               f"{rows['counter_tracks']} counter tracks)")
    for rank, path in sorted(result.per_rank.items()):
        click.echo(f"  rank {rank}: {path}")
    if result.foreign_events:
        click.echo(f"  merged in {result.foreign_events} events of {with_trace}")
    if set(result.clocks.values()) != {"unix"}:
        click.echo("note: the record has no t0_unix (an older probe): times are seconds since the probe started "
                   "and line up with no other trace")
