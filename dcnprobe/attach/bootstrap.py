"""Whether, and when, a process of a launched command gets the attach agent.

sitecustomize calls `start()` in every Python process the command starts. Not in
multiprocessing's helper processes (DataLoader workers started with spawn or forkserver,
the forkserver itself, the resource tracker): they re-run sitecustomize with the
launcher's environment, and a worker must never record. Everywhere else the agent is
installed once torch has been imported, so a process that never imports torch pays only
this check. Which of those processes records is settled later, by the run-directory
claim (dcnprobe.attach.claim): the first one that starts training.
"""

from __future__ import annotations

import sys
from types import ModuleType

from dcnprobe.attach.post_import import when_imported
from dcnprobe.contract import AttachConfig


def start() -> None:
    if is_multiprocessing_helper(sys.orig_argv if hasattr(sys, "orig_argv") else sys.argv):
        return
    try:
        config = AttachConfig.from_env()
    except ValueError as exc:
        print(f"dcnprobe: warning: not attaching the probe: {exc}", file=sys.stderr)
        return
    if config is not None:
        when_imported("torch", lambda torch: _install(config, torch))


def is_multiprocessing_helper(argv: list[str]) -> bool:
    """multiprocessing starts its children as `python -c 'from multiprocessing.spawn import
    spawn_main; ...' --multiprocessing-fork` (spawn), or `-c 'from multiprocessing.forkserver
    import main; ...'`, `-c 'from multiprocessing.resource_tracker import main; ...'`."""
    return "--multiprocessing-fork" in argv or any(a.startswith("from multiprocessing.") for a in argv)


def _install(config: AttachConfig, torch: ModuleType) -> None:
    try:
        from dcnprobe.attach.agent import Agent

        Agent(config).install()
    except Exception as exc:  # the script runs unprobed rather than not at all
        print(f"dcnprobe: warning: cannot attach the probe: {type(exc).__name__}: {exc}", file=sys.stderr)
