"""`dcnprobe bench`: the slowdown-regression benchmarks (same as `python -m benchmarks`)."""

from __future__ import annotations

import sys

import click


@click.command("bench", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                          "help_option_names": []})
@click.pass_context
def command(ctx: click.Context) -> None:
    """Run the benchmarks and check them against benchmarks/baseline.json (see --help there)."""
    from benchmarks.runner import main

    sys.exit(main(list(ctx.args)))
