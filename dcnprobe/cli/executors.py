"""`--ray [ADDRESS]`: where the trials of a multi-trial command run (dcnprobe.harness.executor)."""

from __future__ import annotations

from collections.abc import Callable

import click

from dcnprobe.errors import UsageError
from dcnprobe.harness.executor import LOCAL_RAY


def ray_option(packs: bool) -> Callable:
    """Trials whose times are compared ask for a whole node each; a study's may share one."""
    how = ("each trial asks for --trial-cpus CPUs, so several share a node" if packs
           else "each trial asks for a whole node, so that no two timed trials share CPUs")
    return click.option("--ray", "ray_address", is_flag=False, flag_value=LOCAL_RAY, default=None, metavar="[ADDRESS]",
                        help=f"run trials as Ray tasks: on the cluster at ADDRESS, or on a new local one; {how} "
                             "(needs the ray extra; on several machines OUT must be on shared storage)")


def ray_refused(reason: str) -> Callable:
    """For a command that cannot use Ray: `--ray` is refused with the reason."""

    def refuse(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            raise UsageError(f"--ray: {reason}")

    return click.option("--ray", is_flag=False, flag_value=LOCAL_RAY, default=None, expose_value=False, hidden=True,
                        callback=refuse)
