"""The `dcnprobe` command: a thin face over library functions, one module per subcommand.

Bad input of any kind ends in one line on stderr and exit code 2 (or a code the command
documents), never a traceback. Ctrl-C ends in one line too, saying what was kept, and
exit code 130; SIGTERM the same way with exit code 143 (dcnprobe.cli.interruption).
"""

from __future__ import annotations

import importlib
import sys

import click

from dcnprobe import __version__
from dcnprobe.cli import interruption
from dcnprobe.contract import Exit
from dcnprobe.errors import UsageError

# Each subcommand is imported when it runs (or when --help lists them), so that a command
# loads what it needs and no more: `dcnprobe run` does not load the study, nor `dcnprobe
# watch` torch. Its module then imports at the top like any other.
COMMANDS = {
    "train": "dcnprobe.cli.train:command",
    "faults": "dcnprobe.cli.train:faults_command",
    "run": "dcnprobe.cli.run:command",
    "analyze": "dcnprobe.cli.analyze:command",
    "bisect": "dcnprobe.cli.bisect:command",
    "sweep": "dcnprobe.cli.sweep:command",
    "study": "dcnprobe.cli.study:command",
    "profile-epoch": "dcnprobe.cli.profile_epoch:command",
    "bench": "dcnprobe.cli.bench:command",
    "watch": "dcnprobe.cli.watch:command",
    "export": "dcnprobe.cli.export:command",
    "attach": "dcnprobe.cli.attach_pid:command",
}


class _Commands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attribute)

    @property
    def all_commands(self) -> dict[str, click.Command]:
        """Every subcommand, imported (for tests and documentation)."""
        with click.Context(self) as ctx:
            return {name: self.get_command(ctx, name) for name in self.list_commands(ctx)}


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="dcnprobe")
def cli() -> None:
    """Find out why a PyTorch training run gets slower epoch after epoch."""


def main(argv: list[str] | None = None) -> None:
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
        sys.exit(Exit.TERMINATED if terminated else Exit.INTERRUPTED)
    except UsageError as exc:
        fail(str(exc), code=exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    finally:
        if argv is None:
            interruption.leave_quietly_on_next_interrupt()


def _run(args: list[str]) -> None:
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
