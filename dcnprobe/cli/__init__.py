"""The `dcnprobe` command: a thin face over library functions, one module per subcommand.

Bad input of any kind ends in one line on stderr and exit code 2 (or a code the command
documents), never a traceback. Ctrl-C ends in one line too, saying what was kept, and
exit code 130; SIGTERM the same way with exit code 143 (dcnprobe.cli.interruption).
"""

from __future__ import annotations

import sys

import click

from dcnprobe import __version__
from dcnprobe.errors import UsageError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="dcnprobe")
def cli() -> None:
    """Find out why a PyTorch training run gets slower epoch after epoch."""


def _register() -> None:
    from dcnprobe.cli import (
        analyze,
        attach_pid,
        bench,
        bisect,
        profile_epoch,
        run,
        study,
        sweep,
        train,
        watch,
    )

    for module in (train, run, analyze, attach_pid, bisect, sweep, study, profile_epoch, bench, watch):
        cli.add_command(module.command)
    cli.add_command(train.faults_command)


def main(argv: list[str] | None = None) -> None:
    from dcnprobe.cli import interruption

    interruption.forget()
    if argv is None:
        interruption.raise_on_terminate()
    try:
        _run(sys.argv[1:] if argv is None else argv)
    except click.UsageError as exc:
        # Click would print the whole usage block; one line says the same.
        fail(exc.format_message())
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        # Ctrl-C or SIGTERM (click turns either into Abort, from the original): say what
        # was kept, not "aborted".
        terminated = isinstance(exc, interruption.Terminated) or isinstance(exc.__cause__, interruption.Terminated)
        click.echo(interruption.message(terminated), err=True)
        sys.exit(interruption.EXIT_TERMINATED if terminated else interruption.EXIT_INTERRUPTED)
    except UsageError as exc:
        fail(str(exc), code=exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    finally:
        if argv is None:
            interruption.leave_quietly_on_next_interrupt()


def _run(args: list[str]) -> None:
    _register()  # imports the commands: inside main's handlers, so a Ctrl-C here is one line too
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress reaches a log file as it happens
    if not args:
        with click.Context(cli, info_name="dcnprobe") as ctx:
            click.echo(cli.get_help(ctx))
        return
    cli.main(args=args, prog_name="dcnprobe", standalone_mode=False)


def fail(message: str, code: int = 2) -> None:
    click.echo(f"dcnprobe: error: {message}", err=True)
    sys.exit(code)
