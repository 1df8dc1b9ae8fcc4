"""The one error type that reaches a person as a single line.

Anything a user can get wrong (a setting, a file, a missing tool) raises `UsageError`
with a message that says what is wrong and what to do. The CLI prints it on one line
and exits with code 2; library callers can catch it.
"""

from dcnprobe.contract import Exit


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2, never a traceback."""

    exit_code = Exit.USAGE
