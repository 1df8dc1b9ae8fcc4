"""`dcnprobe watch RUN_DIR`: follow a run record live, ours or a user's, running or finished."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console

from dcnprobe.distributed.layout import is_distributed
from dcnprobe.errors import UsageError
from dcnprobe.live.ranks import wait_for_layout, watch_ranks
from dcnprobe.live.view import watch
from dcnprobe.records import RUN_FILE


@click.command("watch")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--exit-at-end", is_flag=True, help="exit once the run's footer is written (it ended)")
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="seconds between looks at the record")
@click.option("--plain", is_flag=True, help="plain lines even on a terminal (what a pipe or CI gets)")
def command(run_dir: Path, exit_at_end: bool, interval: float, plain: bool) -> None:
    """Show a run as it goes: epoch times and ratio to epoch 1, phases, memory, progress, warnings.

    Reads RUN_DIR/run.jsonl as it grows (never re-reading it whole); a distributed run's
    directory (rank0/, rank1/, ...) shows one line per rank. Ctrl-C ends the view, not the run.
    """

    if run_dir.exists() and run_dir.is_dir() and not (run_dir / RUN_FILE).exists() and not is_distributed(run_dir) \
            and any(run_dir.iterdir()):
        raise UsageError(f"{run_dir} is not a run directory (no {RUN_FILE} in it); a distributed run's has "
                         f"rank0/{RUN_FILE}, rank1/...")
    if not run_dir.exists() or not any(run_dir.iterdir()):  # started before the run: wait, as `tail -F` would
        click.echo(f"waiting for a run record in {run_dir} (Ctrl-C to stop)", err=True)
        try:
            wait_for_layout(run_dir, time.sleep, interval)
        except KeyboardInterrupt:
            return
    view = watch_ranks if is_distributed(run_dir) else watch  # a distributed run: one line per rank
    view(run_dir, Console(), exit_at_end=exit_at_end, interval=interval, live=False if plain else None)
