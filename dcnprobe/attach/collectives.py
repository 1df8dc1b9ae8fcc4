"""Time a rank spends blocked in collectives: the `collective` phase of its batches.

Two ways a training loop waits for the other ranks, each timed where it can be seen:

    explicit calls   torch.distributed's blocking collectives (all_reduce, barrier,
                     broadcast, all_gather, ...), called by the loop or a framework: the
                     call's duration. Calls with async_op=True return at once; their wait
                     is in Work.wait(), which is C++ and not timed (said in the header).
    DDP's gradients  DistributedDataParallel all-reduces gradient buckets while backward
                     still computes, and waits for them all at backward's end. Through its
                     communication hook (PyTorch's own allreduce hook, or the script's, wrapped)
                     each bucket's launch and completion are seen; the wait is from the last
                     bucket's launch (backward's compute is done by then) to the last
                     completion. A rank the others wait for launches late and waits little;
                     the ones waiting for it see this grow.

The training thread reads what the communication threads noted (gloo and NCCL complete
futures on their own threads: a list append there, nothing else).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

# The blocking collectives of torch.distributed timed as calls. Point-to-point send/recv are
# not collectives (no rank waits for all the others).
EXPLICIT = ("all_reduce", "barrier", "broadcast", "all_gather", "all_gather_into_tensor", "all_gather_object",
            "broadcast_object_list", "gather", "gather_object", "scatter", "scatter_object_list", "reduce",
            "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single", "monitored_barrier")

DDP_HOOK_NOT_TIMED = ("DDP's gradient all-reduce is not timed: a built-in communication hook was registered "
                      "(register_builtin_comm_hook), which runs in C++")


class Collectives:
    """Installs the timing, and hands each wait to `waited(seconds)` on the training thread."""

    def __init__(self, waited: Callable[[float], None], clock: Callable[[], float]) -> None:
        self.waited, self.clock = waited, clock
        self.notes: list[str] = []  # where collective time could not be seen, in words
        self._depth = 0  # all_gather_object calls all_gather: only the outermost call counts
        self.launched: list[float] = []  # DDP buckets of the backward under way
        self._done: list[float] = []
        self._originals: list[tuple[Any, str, Any]] = []
        self._modules: set[int] = set()  # DDP modules whose hook is ours (by id)

    # -- installation --------------------------------------------------------------------------

    def install(self) -> None:
        if not dist.is_available():
            return
        for name in EXPLICIT:
            original = getattr(dist, name, None)
            if original is not None:
                timed = self._timed_call(original)
                # Both names: scripts call dist.all_reduce, torch's own helpers the c10d module's.
                for owner in (dist, dist.distributed_c10d):
                    if getattr(owner, name, None) is original:
                        self._patch(owner, name, timed)
        register = DistributedDataParallel.register_comm_hook

        @functools.wraps(register)
        def register_comm_hook(ddp, state, hook):
            self._modules.add(id(ddp))
            return register(ddp, state, self.timed_hook(hook))

        builtin = DistributedDataParallel._register_builtin_comm_hook

        @functools.wraps(builtin)
        def register_builtin_comm_hook(ddp, comm_hook_type):
            self._modules.add(id(ddp))
            self._note(DDP_HOOK_NOT_TIMED)
            return builtin(ddp, comm_hook_type)

        self._patch(DistributedDataParallel, "register_comm_hook", register_comm_hook)
        self._patch(DistributedDataParallel, "_register_builtin_comm_hook", register_builtin_comm_hook)

    def remove(self) -> None:
        for owner, name, original in reversed(self._originals):
            setattr(owner, name, original)
        self._originals.clear()

    def adopt(self, module: Any) -> None:
        """An outermost module about to run forward: a DDP module with no communication hook
        gets PyTorch's default all-reduce hook, timed (the same arithmetic as its built-in
        reduction: the bucket summed across ranks, divided by the world size)."""
        if id(module) in self._modules or not isinstance(module, DistributedDataParallel):
            return
        self._modules.add(id(module))
        if getattr(module, "_comm_hooks", None):  # one registered before the attach could wrap it
            self._note("DDP's gradient all-reduce is not timed: its communication hook was registered "
                       "before the probe was attached")
            return
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import (
            allreduce_hook,  # DDP runs only
        )

        try:
            DistributedDataParallel.register_comm_hook(module, module.process_group, allreduce_hook)
        except Exception as exc:  # never break the script's DDP for a measurement
            self._note(f"DDP's gradient all-reduce is not timed: {type(exc).__name__}: {exc}")

    # -- DDP's buckets ---------------------------------------------------------------------------

    def timed_hook(self, hook: Callable) -> Callable:
        launched, done, clock = self.launched, self._done, self.clock

        def finished(_future: Any) -> None:
            done.append(clock())

        @functools.wraps(hook)
        def timed(state: Any, bucket: Any) -> Any:
            launched.append(clock())
            future = hook(state, bucket)
            future.add_done_callback(finished)
            return future

        return timed

    def backward_wait(self) -> float:
        """At an outermost backward's end: seconds it waited for DDP's bucket all-reduces
        (0 when none were launched in it)."""
        if not self.launched:
            return 0.0
        now = self.clock()
        last_launch = max(self.launched)
        # A completion not yet noted (its callback still queued) ended by now at the latest.
        last_done = now if len(self._done) < len(self.launched) else max(self._done)
        self.launched.clear()
        self._done.clear()
        return max(0.0, min(last_done, now) - last_launch)

    # -- explicit calls ----------------------------------------------------------------------------

    def _timed_call(self, call: Callable) -> Callable:
        @functools.wraps(call)
        def timed(*args, **kwargs):
            if self._depth or kwargs.get("async_op"):
                return call(*args, **kwargs)
            self._depth += 1
            began = self.clock()
            try:
                return call(*args, **kwargs)
            finally:
                self._depth -= 1
                self.waited(self.clock() - began)

        return timed

    def _patch(self, owner: Any, name: str, replacement: Any) -> None:
        self._originals.append((owner, name, getattr(owner, name)))
        setattr(owner, name, replacement)

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
