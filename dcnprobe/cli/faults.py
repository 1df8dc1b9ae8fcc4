"""`dcnprobe faults`: the built-in slowdown scenarios."""

from __future__ import annotations

import click


@click.command("faults")
def command() -> None:
    """List the slowdown scenarios that --fault can plant, with the cause each reproduces."""
    from model.faults import FAULTS
    from dcnprobe.settings import format_value

    width = max(len(name) for name in FAULTS)
    for name, fault in FAULTS.items():
        needs = " ".join(f"{k}={format_value(v)}" for k, v in fault.shows_with.items())
        click.echo(f"{name.ljust(width)}  cause {fault.cause}: {fault.summary}" + (f" [shows with {needs}]" if needs else ""))
    click.echo("\nYour own: --fault path/to/file.py:Class or --fault package.module:Class "
               "(a model.plugins.TrainerPlugin subclass).")
