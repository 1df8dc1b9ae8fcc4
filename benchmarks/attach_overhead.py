"""The attach's overhead: a training loop bare and with the probe attached from outside,
batch by batch, as a ratio of batch times (goal 1.01) with a bootstrap interval over the
(measured, bare) batch pairs of several processes (processes resampled, then pairs within
each), plus the sampler thread's CPU share.

The loop runs in a child process started the way `dcnprobe run` starts one (the attach
site on PYTHONPATH, DCNPROBE_ATTACH set), with no probe of its own (NullProbe), so every
measurement comes from the attach. Within each pass over the loader, batches alternate
(bare, measured, measured, bare, ...: _Switch): a measured batch runs with the agent's
hooks and pays its record, a bare batch with the hooks removed (Agent.pause). Neighbouring
batches share the machine's state. Alternating whole epochs of 20 batches left the
machine's drift in the ratio: epochs' median batch times spread 14% here, neighbours
correlated at only 0.71, so each (attached, bare) epoch pair's ratio scattered by 9%.
The sampler thread runs on both sides, so its cost cannot show in the ratio: its CPU
seconds over the run's are added to it, the most it could take if every cycle of it held
the loop up. What it does take is measured beside that (`sampler_measured_share`): the
batches its ticks overlapped against those they did not. The stopwatch is the loop's
own. Three loops:

    attach_overhead           the built-in trainer, batch 1024 (about 45 ms a batch here)
    attach_overhead_example   examples/per_sample_loop.py's dataset (a `__getitem__` per row
                              and the default collate), model and optimizer in the loop its
                              main() runs, batch 64 (about 23 ms: the attach's fixed cost per
                              batch weighs more there)
    attach_overhead_modules   a 6-layer transformer encoder (about 45 ms, some 60 module calls
                              a step: what a hook on every module would cost)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from dcnprobe.benchmarks import children
from dcnprobe.benchmarks.timing import clustered_paired_ratio

DATA = "synthetic:val_rows=4096"  # the report's training split; a small validation split per epoch
# Smaller than the report's 4096 rows: the hooks cost about the same per batch whatever its
# size, so a 4x cheaper batch shows their share 4x more clearly, in a quarter of the time.
BATCH_SIZE = 1024


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "per_sample_loop.py"
# (processes, epochs each, batches per epoch) per profile and loop. Batches per epoch: 2 +
# a multiple of len(PATTERN), each pass's first and last untimed; 42 gives 20 pairs a pass.
# Several processes in the full profile: what differs from one process to the next (its
# memory layout, its allocator's history) is part of what the attach costs a user, and
# the interval holds it (timing.clustered_paired_ratio). A quick run's one process gives
# the pairs' interval alone.
SIZES = {"trainer": {"quick": (1, 8, 22), "full": (6, 10, 42)},
         "example": {"quick": (1, 16, 22), "full": (8, 15, 42)},
         "modules": {"quick": (1, 8, 22), "full": (6, 10, 42)},
         "floor": {"quick": (1, 16, 22), "full": (8, 15, 42)}}


def run(profile: str) -> dict[str, Any]:
    return {"attach_overhead": measure_attach(profile), "attach_overhead_example": measure_example(profile),
            "attach_overhead_modules": measure_modules(profile), "attach_floor_example": measure_floor(profile)}


def measure_attach(profile: str, faults: tuple[str, ...] = ()) -> dict[str, Any]:
    """The attach overhead on the built-in trainer, in a fresh run: what the gate measures
    again when unsure."""
    return _measure("trainer", profile)


def measure_example(profile: str, faults: tuple[str, ...] = ()) -> dict[str, Any]:
    """The attach overhead on examples/per_sample_loop.py's loop, in a fresh run."""
    return _measure("example", profile)


def measure_modules(profile: str, faults: tuple[str, ...] = ()) -> dict[str, Any]:
    """The attach overhead on a model of many small modules (a 6-layer transformer
    encoder: about 60 module calls a step), in a fresh run."""
    return _measure("modules", profile)


def measure_floor(profile: str, faults: tuple[str, ...] = ()) -> dict[str, Any]:
    """The example loop with hooks that do nothing at the attach's hook points, against
    none: the part of attach_overhead_example no work in the hooks can remove. Not
    attached, so no sampler either."""
    return _measure("floor", profile)


def _measure(loop: str, profile: str) -> dict[str, Any]:
    processes, epochs, batches = SIZES[loop][profile]
    runs = [_run_child(loop, epochs, batches) for _ in range(processes)]
    groups = []
    for times in runs:
        pairs = times["pairs"][len(times["pairs"]) // 20:]  # the first twentieth: allocator and cache warm-up
        groups.append([segment for measured, bare in pairs for segment in ((True, [measured]), (False, [bare]))])
    result = clustered_paired_ratio(groups)
    # The sampler thread runs on both sides: the most it can take from the loop (all of its
    # CPU time, as if every cycle of it held the loop up) is added to the hooks' ratio.
    hooks = result["value"]
    share = float(np.mean([times["sampler_cpu_share"] for times in runs]))
    result["value"] = hooks + share
    result["interval"] = [end + share for end in result["interval"]]
    users = [times["sampler_user_fraction"] for times in runs if times["sampler_user_fraction"] is not None]
    # The processes ran one after another on one monotonic clock: their batches and ticks
    # do not overlap, and the tick effect is measured over all of them together.
    timed = [batch for times in runs for batch in times["timed"][len(times["timed"]) // 20:]]
    result["detail"].update(loop=loop, epochs=epochs * processes, pairs=sum(len(g) // 2 for g in groups),
                            hooks_ratio=hooks, sampler_cpu_share=share,
                            sampler_user_fraction=float(np.mean(users)) if users else None,
                            recorded_batches=sum(times["recorded_batches"] for times in runs),
                            **tick_effect(timed, [tick for times in runs for tick in times["ticks"]]))
    return result


def _run_child(loop: str, epochs: int, batches: int) -> dict[str, Any]:
    """One process of `loop`, attached as `dcnprobe run` attaches (the floor: not
    attached, one thread set as the attach sets it), its batch times."""
    from dcnprobe.contract import AttachConfig, launch_env

    with tempfile.TemporaryDirectory() as out:
        # One intra-op thread, applied from outside like any setting: on a shared 2-core
        # machine, torch's spinning threads make batch times swing far more than the hooks cost.
        config = AttachConfig(run_dir=out, settings={"threads": "1"})
        env = launch_env(config) if loop != "floor" else None
        return children.run_child("dcnprobe.benchmarks.attach_overhead", [loop, str(epochs), str(batches)], "attach overhead",
                         env=env)


def tick_effect(timed: list[list], ticks: list[list], samples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """What the sampler takes from the loop, measured rather than bounded: batches that a
    tick overlapped against those it did not, on the same side (ticks fall at random
    against batches). A longer batch is likelier to be overlapped, whatever the tick
    costs, so the batches it did not overlap are weighted by how likely they were to be
    (their length plus a tick's): the median difference, per side, times the overlapped
    batches of each, over the timed span, with a bootstrap interval."""
    if not timed or not ticks:
        return {}
    starts = np.array([t[1] for t in timed])
    ends = np.array([t[2] for t in timed])
    sides = np.array([t[0] for t in timed], dtype=bool)
    ordered = sorted(ticks)
    tick_began = np.array([t[0] for t in ordered])
    tick_ended = np.array([t[1] for t in ordered])
    # A batch overlaps a tick when some tick began before it ended and ended after it began.
    first_after_end = np.searchsorted(tick_began, ends)
    latest_end = np.maximum.accumulate(tick_ended)
    overlapped = (first_after_end > 0) & (latest_end[np.maximum(first_after_end - 1, 0)] > starts)
    seconds = ends - starts
    tick_s = float(np.mean(tick_ended - tick_began))
    groups = [(seconds[(sides == side) & overlapped], seconds[(sides == side) & ~overlapped]) for side in (True, False)]
    if any(hit.size < 10 or rest.size < 10 for hit, rest in groups):
        return {}
    span = float(seconds.sum())
    rng = np.random.default_rng(seed)

    def share(pick: bool) -> float:
        extra = 0.0
        for hit, rest in groups:
            if pick:
                hit, rest = rng.choice(hit, hit.size), rng.choice(rest, rest.size)
            extra += (np.median(hit) - _weighted_median(rest, rest + tick_s)) * hit.size
        return extra / span

    measured = share(False)
    spread = np.sort([share(True) for _ in range(samples)])
    return {"sampler_measured_share": measured,
            "sampler_measured_interval": [float(spread[int(0.025 * samples)]), float(spread[int(0.975 * samples) - 1])],
            "sampler_overlapped_batches": int(overlapped.sum())}


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


# The sides of a pass's timed batches, repeating: bare first, then measured twice, then
# bare, so that a drift of the machine's speed within an epoch weighs on both sides alike.
PATTERN = (False, True, True, False)


class _Switch:
    """In the attached process: the loop's own batch times, measured and bare batches in
    turns within each pass (PATTERN). A measured batch runs with the agent's hooks and is
    recorded as in any attached run (its record closed inside its own time, where the
    loop's next request for data would close it); a bare batch runs with the hooks removed
    (Agent.pause). The switching itself happens between the two stopwatch readings, outside
    both. A pass's first batch (the loader's start, the hooks learning the outermost
    modules) and its last (the pass ends recorded) are run measured and not timed.

    The sampler thread runs throughout, on both sides alike, so its cost is not in the
    ratio: its CPU time over the timed span is reported beside it (`sampler_cpu_share`),
    and each tick's span is noted, for what the ticks cost the batches they overlap
    (`tick_effect`)."""

    def __init__(self, batches: int, hooks: Any = None) -> None:
        from dcnprobe.attach import active

        # What a measured batch runs with: the agent, or the floor's hooks that do nothing.
        self.agent = hooks or active.current()
        if self.agent is None:
            raise SystemExit("the attach agent is not installed in this process")
        if (batches - 2) % len(PATTERN):
            raise SystemExit(f"batches per epoch must be 2 + a multiple of {len(PATTERN)}")
        self.batches = batches
        self.pairs: list[tuple[float, float]] = []  # (measured, bare) seconds
        # Every timed batch (measured, began, ended) and every sampler tick (began, ended):
        # what a tick costs the batches it overlaps (tick_effect).
        self.timed: list[tuple[bool, float, float]] = []
        self.ticks: list[tuple[float, float]] = []
        self._open: dict[bool, float] = {}  # a side's time waiting for the other side's
        self.last = 0.0
        self._sampler_cpu: tuple[float, float] | None = None  # (sampler CPU s, wall s) at the first timed batch

    def side(self, done: int) -> bool | None:
        """Which side batch `done` (1-based) of a pass runs on; None: not timed, measured."""
        if done <= 1 or done >= self.batches:
            return None
        return PATTERN[(done - 2) % len(PATTERN)]

    def batch_done(self, done: int) -> None:
        side = self.side(done)
        agent = self.agent
        if side:
            agent.close_batch()  # within the batch's time: a measured batch pays its record
        now = time.perf_counter()
        if side is not None:
            if self._sampler_cpu is None:
                self._sampler_cpu = (self._sampler_seconds(), now)
                if self.agent.probe is not None:
                    self._watch_ticks()
            self.timed.append((side, self.last, now))
            other = self._open.pop(not side, None)
            if other is None:
                self._open[side] = now - self.last
            else:
                self.pairs.append((now - self.last, other) if side else (other, now - self.last))
        if self.side(done + 1) is False:
            agent.pause()
        else:
            agent.resume()
        self.last = time.perf_counter()

    def epoch_done(self) -> None:
        self._open.clear()

    def _watch_ticks(self) -> None:
        """Note when each of the sampler thread's ticks begins and ends (its sample, then
        its record written: the batch lines waiting are encoded there)."""
        sampler = self.agent.probe.sampler
        sample, emit = sampler.sample, sampler.emit
        began = [0.0]

        def timed_sample(*args, **kwargs):
            began[0] = time.perf_counter()
            return sample(*args, **kwargs)

        def timed_emit(record):
            try:
                emit(record)
            finally:
                self.ticks.append((began[0], time.perf_counter()))

        sampler.sample, sampler.emit = timed_sample, timed_emit

    def _sampler_seconds(self) -> float:
        if self.agent.probe is None:
            return 0.0
        thread = self.agent.probe.sampler._thread
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident)) if thread is not None else 0.0

    def _sampler_user_seconds(self) -> float | None:
        """The sampler thread's CPU in user mode over its life (Linux): the part of it that
        runs Python, holding the GIL; the rest is the kernel's work on /proc reads."""
        try:
            thread = self.agent.probe.sampler._thread
            with open(f"/proc/self/task/{thread.native_id}/stat", "rb") as f:
                return int(f.read().rsplit(b")", 1)[1].split()[11]) / os.sysconf("SC_CLK_TCK")
        except (AttributeError, OSError, IndexError, ValueError):
            return None

    def report(self) -> None:
        recorded = self.agent.probe.step if self.agent.probe is not None else 0
        began_cpu, began = self._sampler_cpu or (0.0, time.perf_counter())
        cpu = self._sampler_seconds()
        user = self._sampler_user_seconds()
        share = (cpu - began_cpu) / max(time.perf_counter() - began, 1e-9)
        children.report({"pairs": self.pairs, "recorded_batches": recorded, "sampler_cpu_share": share,
                         "timed": self.timed, "ticks": self.ticks,
                         "sampler_user_fraction": user / cpu if user is not None and cpu else None})


def _trainer_child(epochs: int, batches: int) -> None:
    from dcnprobe.model.trainer import TrainJob, fit

    from dcnprobe.hooks import NullProbe
    from dcnprobe.settings import Settings

    switch = _Switch(batches)
    job = TrainJob(settings=Settings(device="cpu", batch_size=BATCH_SIZE), epochs=epochs, max_batches=batches,
                   data=DATA, checkpoints=False)
    fit(job, probe=NullProbe(), on_batch=lambda epoch, done, total: switch.batch_done(done),
        on_epoch=lambda metrics: switch.epoch_done())
    switch.report()


def _example_child(epochs: int, batches: int, floor: bool = False) -> None:
    """per_sample_loop.py's main() loop, cut to `batches` per epoch, with its defaults."""
    import runpy

    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    example = runpy.run_path(str(EXAMPLE))  # its definitions; main() runs only as __main__
    rows, features, hidden, batch_size = 12800, 32, 1024, 64
    torch.manual_seed(0)
    dataset = example["Rows"](rows, features, 0, None)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    model = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def set_epoch(epoch: int) -> None:
        dataset.epoch.value = epoch

    _alternate(epochs, batches, model, loader, optimizer, nn.BCEWithLogitsLoss(), set_epoch, floor)


def _modules_child(epochs: int, batches: int) -> None:
    """A small transformer encoder on token sequences: its cost per batch is spread over
    many module calls, where a hook on every module would be paid at each."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    rows, length, vocab, width = 16 * batches, 16, 1000, 64  # about 50 ms a batch here
    tokens = torch.randint(0, vocab, (rows, length))
    labels = (tokens[:, 0] % 2).float().unsqueeze(1)
    loader = DataLoader(TensorDataset(tokens, labels), batch_size=16, shuffle=True)
    layer = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=2 * width, batch_first=True)

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, width)
            self.encoder = nn.TransformerEncoder(layer, num_layers=6, enable_nested_tensor=False)
            self.head = nn.Linear(width, 1)

        def forward(self, x):
            return self.head(self.encoder(self.embed(x)).mean(dim=1))

    model = Classifier()
    _alternate(epochs, batches, model, loader, torch.optim.AdamW(model.parameters(), lr=1e-3), nn.BCEWithLogitsLoss())


class _NoOpHooks:
    """The floor: hooks that do nothing, where the attach hooks (the forward pre and post
    hooks on the outermost modules, the global optimizer step pre and post hooks,
    torch.autograd.backward wrapped), switched as _Switch switches the agent. What hooking
    alone costs a loop, before the attach does any work in its hooks. (The attach's
    iterator wrapper stays on both sides of its own measure, as this one's does.)"""

    probe = None

    def __init__(self, modules: tuple[Any, ...]) -> None:
        import torch

        self.modules, self.torch, self.handles = modules, torch, []
        self.backward = torch.autograd.backward

    def resume(self) -> None:
        if self.handles:
            return
        from torch.optim import optimizer

        nothing = _nothing
        for module in self.modules:
            self.handles += [module.register_forward_pre_hook(nothing),
                             module.register_forward_hook(nothing, always_call=True)]
        self.handles += [optimizer.register_optimizer_step_pre_hook(nothing),
                         optimizer.register_optimizer_step_post_hook(nothing)]
        backward = self.backward

        def wrapped(*args, **kwargs):
            nothing()
            try:
                return backward(*args, **kwargs)
            finally:
                nothing()

        self.torch.autograd.backward = wrapped

    def pause(self) -> None:
        while self.handles:
            self.handles.pop().remove()
        self.torch.autograd.backward = self.backward

    def close_batch(self) -> None:
        pass


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


class _Wrapped:
    """An iterable whose iterator passes every item through a call that does nothing."""

    def __init__(self, iterable: Any) -> None:
        self.iterable = iterable

    def __iter__(self) -> Any:
        for item in self.iterable:
            _nothing(item)
            yield item


def _floor_child(epochs: int, batches: int) -> None:
    """The example loop with the floor's hooks (_NoOpHooks) on its measured batches, one
    intra-op thread as the attach's runs have."""
    import torch

    torch.set_num_threads(1)
    _example_child(epochs, batches, floor=True)


def _alternate(epochs: int, batches: int, model: Any, loader: Any, optimizer: Any, loss_fn: Any,
               on_epoch: Callable[[int], None] = lambda epoch: None, floor: bool = False) -> None:
    """A plain training loop of `batches` steps an epoch, attached and bare in turns (or,
    `floor`, with hooks that do nothing and without them)."""
    if floor:
        hooks = _NoOpHooks((model, loss_fn))
        switch, loader = _Switch(batches, hooks), _Wrapped(loader)
        hooks.resume()  # a pass's first batch runs measured, as the agent's does
    else:
        switch = _Switch(batches)
    for epoch in range(1, epochs + 1):
        on_epoch(epoch)
        model.train()
        for done, (x, y) in enumerate(loader, start=1):
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            switch.batch_done(done)
            if done == batches:
                break
        switch.epoch_done()
    switch.report()


if __name__ == "__main__":
    {"trainer": _trainer_child, "example": _example_child, "modules": _modules_child,
     "floor": _floor_child}[sys.argv[1]](int(sys.argv[2]), int(sys.argv[3]))
