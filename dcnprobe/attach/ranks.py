"""Which rank of a distributed job this process is, when it claims its record.

torchrun (and `python -m torch.distributed.run`) tells each rank in its environment
(RANK, WORLD_SIZE, LOCAL_RANK); a script that spawns its own ranks with
torch.multiprocessing says so to torch.distributed.init_process_group, which a loop calls
before it trains. The process group, where there is one, is the authority; the
environment otherwise. A world of one is an ordinary run: one record, no rank directory.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import torch.distributed as dist

from dcnprobe.distributed.layout import HOST, LOCAL_RANK, RANK, WORLD_SIZE


def this_rank(environ: Mapping[str, str] | None = None) -> dict[str, object] | None:
    """The rank fields of this process's header, or None outside a distributed job."""
    env = os.environ if environ is None else environ
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        try:
            rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        except (KeyError, ValueError):
            return None
    if world <= 1:
        return None
    try:
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        local = rank
    return {RANK: rank, WORLD_SIZE: world, LOCAL_RANK: local, HOST: socket.gethostname()}
