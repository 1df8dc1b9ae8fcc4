"""`dcnprobe bench`: the slowdown-regression benchmarks, run as `python -m dcnprobe.benchmarks`.

The benchmarks measure the toolkit; the toolkit must not depend on them. So this command
imports nothing from `benchmarks`: it speaks click like every other subcommand (one-line
errors, the group's --help), then runs the benchmarks module in a child process with the
same options and exits with its exit code (0 pass, 1 a threshold failed, 2 bad input).
The group names and the baseline's location stay in benchmarks/, written once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from dcnprobe.executables import python_module


def benchmark_argv(profile: str, only: str | None, out: Path | None, compare: Path | None,
                   baseline: Path | None, plant: tuple[str, ...]) -> list[str]:
    """The `python -m dcnprobe.benchmarks` command line for these options (defaults left to it)."""
    argv = [*python_module("dcnprobe.benchmarks"), "--profile", profile]
    for flag, value in (("--only", only), ("--out", out), ("--compare", compare), ("--baseline", baseline)):
        if value is not None:
            argv += [flag, str(value)]
    for fault in plant:
        argv += ["--plant", fault]
    return argv


@click.command("bench")
@click.option("--profile", type=click.Choice(["quick", "full"]), default="quick", show_default=True,
              help="quick: what CI runs after the tests; full: adds profilers and the scenario table")
@click.option("--only", metavar="GROUPS", help="comma-separated groups (epoch, overhead, throughput, ...)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="results file [default: runs/bench/results.json]")
@click.option("--compare", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="earlier results file, for the relative thresholds")
@click.option("--baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="thresholds file [default: benchmarks/baseline.json]")
@click.option("--plant", multiple=True, metavar="FAULT",
              help="plant a slowdown scenario in the clean-run measure, to see the gate fail")
def command(profile: str, only: str | None, out: Path | None, compare: Path | None, baseline: Path | None,
            plant: tuple[str, ...]) -> None:
    """Run the benchmarks and check them against their baseline thresholds."""
    argv = benchmark_argv(profile, only, out, compare, baseline, plant)
    try:
        code = subprocess.call(argv)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
