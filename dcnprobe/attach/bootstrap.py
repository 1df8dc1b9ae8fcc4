"""Whether, and when, a process of a launched command gets the attach agent.

sitecustomize calls `start()` in every Python process the command starts. Not in
multiprocessing's helper processes (DataLoader workers started with spawn or forkserver,
the forkserver itself, the resource tracker): they re-run sitecustomize with the
launcher's environment, and a worker must never record. One kind of multiprocessing child
does train: a rank that a script spawns itself (torch.multiprocessing.spawn). It is told
from a worker by what it does first: it joins a process group, which no DataLoader worker
does; the agent is installed then, and the worker is left exactly as it was. Everywhere
else the agent is
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
    helper = is_multiprocessing_helper(sys.orig_argv if hasattr(sys, "orig_argv") else sys.argv)
    try:
        config = AttachConfig.from_env()
    except ValueError as exc:
        if not helper:
            print(f"dcnprobe: warning: not attaching the probe: {exc}", file=sys.stderr)
        return
    if config is None:
        return
    if helper:
        when_imported("torch", lambda torch: _install_when_a_rank(config, torch))
    else:
        when_imported("torch", lambda torch: _install(config, torch))


def is_multiprocessing_helper(argv: list[str]) -> bool:
    """multiprocessing starts its children as `python -c 'from multiprocessing.spawn import
    spawn_main; ...' --multiprocessing-fork` (spawn), or `-c 'from multiprocessing.forkserver
    import main; ...'`, `-c 'from multiprocessing.resource_tracker import main; ...'`."""
    return "--multiprocessing-fork" in argv or any(a.startswith("from multiprocessing.") for a in argv)


def _install_when_a_rank(config: AttachConfig, torch: ModuleType) -> None:
    """A multiprocessing child: the agent once it joins a process group (a spawned rank)."""
    dist = torch.distributed
    if not dist.is_available():
        return
    c10d = dist.distributed_c10d
    join = c10d.init_process_group

    def init_process_group(*args, **kwargs):
        result = join(*args, **kwargs)
        for owner in (dist, c10d):  # once is enough
            if getattr(owner, "init_process_group", None) is init_process_group:
                owner.init_process_group = join
        _install(config, torch)
        return result

    for owner in (dist, c10d):
        if getattr(owner, "init_process_group", None) is join:
            owner.init_process_group = init_process_group


def _install(config: AttachConfig, torch: ModuleType) -> None:
    try:
        from dcnprobe.attach.agent import Agent

        Agent(config).install()
    except Exception as exc:  # the script runs unprobed rather than not at all
        print(f"dcnprobe: warning: cannot attach the probe: {type(exc).__name__}: {exc}", file=sys.stderr)
