"""What an interrupted command keeps, said in one line: `dcnprobe: interrupted; kept: ...`.

A command says what it has to keep as soon as it has it (a run record being written, a
cache of finished trials); `main()` prints the last thing said when Ctrl-C arrives, and
exits with 130. Nothing half-done is written on the way out: reports and summaries are
written only by a command that finished.
"""

from __future__ import annotations

import os
import signal
import sys

from dcnprobe.contract import Exit


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler's time limit, `kill`, a container stopping), raised where the
    program is, so that it leaves as after Ctrl-C: the run record gets its footer
    ("interrupted"), workers are shut down, and what was kept is said in one line. Without
    it, SIGTERM ends Python at once: the record keeps every batch but has no footer.
    Also what a SIGINT becomes when the shell started us with SIGINT ignored (a background
    job), where Ctrl-C cannot reach us and SIGTERM is the way to stop."""

_kept: list[str] = []


def keep(what: str) -> None:
    """From now on, an interruption keeps `what` (replacing what was said before)."""
    _kept[:] = [what]


def forget() -> None:
    _kept.clear()


def kept() -> str:
    return _kept[0] if _kept else "nothing (no work had started)"


def message(terminated: bool = False) -> str:
    return f"dcnprobe: {'terminated' if terminated else 'interrupted'}; kept: {kept()}"


def raise_on_terminate() -> None:
    """SIGTERM raises `Terminated` in the main thread. Only for the program itself.

    Forked DataLoader workers inherit the handler; PyTorch stops a worker that does not
    leave in time with SIGTERM and its worker loop swallows KeyboardInterrupt, so there the
    handler must not raise: in any process but ours it does what SIGTERM does by default
    (without this, shutting down after SIGTERM hung in 2 of 4 runs)."""
    ours = os.getpid()

    def terminate(signum: int, frame: object) -> None:
        if os.getpid() != ours:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    signal.signal(signal.SIGTERM, terminate)


def leave_quietly_on_next_interrupt() -> None:
    """Once dcnprobe is leaving, another Ctrl-C (during teardown: DataLoader workers being
    joined, atexit handlers) would print a traceback from wherever it lands; exit instead.
    Only for the program itself: a process that called main() keeps its own handler."""
    def leave(signum: int, frame: object) -> None:
        sys.stderr.flush()
        os._exit(Exit.INTERRUPTED)

    signal.signal(signal.SIGINT, leave)
    signal.signal(signal.SIGTERM, leave)
