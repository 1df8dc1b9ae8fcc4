"""The probe interface that a training loop talks to, and the no-op probe.

This is all `model/` knows about measurement. A loop calls:

    probe.start(info)                       once, with settings and environment
    probe.epoch_start(epoch)
    for batch in probe.loader(loader):      times `data_wait`: blocked in next()
        with probe.phase("forward"): ...    one of PHASES
        probe.end_batch()
    probe.epoch_end(epoch, metrics)
    probe.finish(status)

`NullProbe` does nothing at all, so `dcnprobe train --no-probe` runs the identical loop
uninstrumented and the probe's overhead can be measured from outside.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from dcnprobe.contract import Exit

T = TypeVar("T")

DATA_WAIT = "data_wait"
# Timed with `probe.phase(name)`, in loop order. The same labels are given to
# torch.profiler.record_function, so traces and records name phases alike.
PHASES: tuple[str, ...] = ("to_device", "forward", "backward", "optimizer", "cache_clear")
# A batch record carries every phase plus `other` (loop time outside any phase) and `total`.
BATCH_TIMES: tuple[str, ...] = (DATA_WAIT, *PHASES, "other", "total")
# Time blocked in collectives (DDP's gradient all-reduce, all_reduce, barrier, broadcast,
# all_gather), apart from backward compute: an optional phase, recorded by the ranks of a
# distributed run and absent elsewhere (records.COLUMNS[BATCH]).
COLLECTIVE = "collective"


class ProbeLike(Protocol):
    def start(self, info: Mapping[str, Any]) -> None: ...

    def loader(self, iterable: Iterable[T]) -> Iterator[T]: ...

    def phase(self, name: str) -> AbstractContextManager[None]: ...

    def end_batch(self, **fields: Any) -> None: ...

    def epoch_start(self, epoch: int) -> None: ...

    def epoch_end(self, epoch: int, metrics: Mapping[str, Any] | None = None) -> None: ...

    def finish(self, status: str = "ok") -> None: ...


class ProbeListener:
    """Something that acts at the probe's boundaries, inside the training process: the
    epoch profilers, the live slowdown warning. Every method is a no-op; override what you
    need. They run on the training thread, so they must be cheap per batch; all but
    on_sample, which the probe's sampler thread calls after each periodic memory sample:
    periodic work done there costs the loop nothing (a listener that takes it hands what it
    shares with on_batch across threads with care, as the live warning does)."""

    def on_start(self, header: Mapping[str, Any]) -> None:
        pass

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def on_batch(self, record: Mapping[str, Any]) -> None:
        pass

    def on_epoch_end(self, epoch: int) -> None:
        pass

    def on_sample(self, sample: Mapping[str, Any]) -> None:
        pass

    def on_finish(self, status: str) -> None:
        pass


class StopRun(SystemExit):
    """Raised by a listener to end the run from the training thread as a clean exit:
    `finally` blocks run, no traceback is printed, and the probe's footer gets `status`
    and `reason` (the early warning under on_slowdown=stop: status `slow`)."""

    def __init__(self, reason: str, status: str = "slow", code: int = Exit.SLOW) -> None:
        super().__init__(code)
        self.reason, self.status = reason, status


# Who is told when a Probe is created in this process. A Probe only records; whoever
# launched the process (the attach, started by `dcnprobe run` or a trial) registers here to
# add what its launch asks for (the early warning, profilers, where to record) to any
# Probe the script makes, without the probe importing any of it.
_when_created: list[Callable[[Any], None]] = []


def when_probe_created(callback: Callable[[Any], None]) -> None:
    _when_created.append(callback)


def probe_created(probe: Any) -> None:
    for callback in tuple(_when_created):
        callback(probe)


_NO_PHASE = contextlib.nullcontext()


class NullProbe:
    """Measures nothing and costs nothing."""

    def start(self, info: Mapping[str, Any]) -> None:
        pass

    def loader(self, iterable: Iterable[T]) -> Iterator[T]:
        return iter(iterable)

    def phase(self, name: str) -> AbstractContextManager[None]:
        return _NO_PHASE

    def end_batch(self, **fields: Any) -> None:
        pass

    def epoch_start(self, epoch: int) -> None:
        pass

    def epoch_end(self, epoch: int, metrics: Mapping[str, Any] | None = None) -> None:
        pass

    def finish(self, status: str = "ok") -> None:
        pass
