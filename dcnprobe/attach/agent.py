"""The attach agent: measures an unmodified training script through public PyTorch hooks
(dcnprobe.attach.torch_hooks) into a normal run record.

The agent is the torch-facing half: it installs the hooks, decides whether this process
records (the claim), builds the Probe, and turns each hook call into an event for the
Recorder (dcnprobe.attach.recorder), which decides batches, epochs and validation passes
through one strategy per epoch mode (dcnprobe.attach.epochs). The header's `boundaries`
says how they were found:

    batch   optimizer-step: the work around one optimizer step, closed when the loop asks
            for the next batch (so that work after the step counts in its `other`); each
            batch record counts its loader batches and optimizer steps.
    epoch   dataloader-pass: one pass over the training DataLoader, decided by the
            backward and optimizer steps in it (a pass with neither is validation).
            epoch-every: every N optimizer steps (AttachConfig.epoch_every), for loops with
            no DataLoader; mark_epoch: where the script calls dcnprobe.mark_epoch().
Phases: data_wait (blocked in next()), forward (the outermost module's forward, with
gradients: hooked on every module until a step has shown which modules the loop calls
outermost, then on those alone, learnt again at each pass and epoch; a module first
called as the outermost mid-epoch is timed from the next pass on), backward
(torch.autograd.backward), optimizer (the step hooks, less the step's closure:
Lightning's training_step, LBFGS's evaluations), cache_clear (the attach's own clearing),
other (the loop's own code, a closure's included), total.

The record's header is written when the first epoch begins (its settings are those of the
loader that epoch iterates); validation passes before it follow the header.

Which process records: the first of the launch to start training claims the run
directory (dcnprobe.attach.claim); in a distributed job (torchrun, or ranks the script
spawns) each rank claims its own, RUN/rankN (dcnprobe.distributed.layout), with its rank,
world size and host in the header, and its time blocked in collectives as the batches'
`collective` phase (dcnprobe.attach.collectives). Forked DataLoader workers inherit the
agent and are switched off at fork; spawned ones never get it (dcnprobe.attach.bootstrap).
A script that creates a Probe itself is left to it (`stand_down`).
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import sys
import time
import weakref
from pathlib import Path
from typing import Any, NoReturn

import torch

from dcnprobe.attach import active
from dcnprobe.attach.claim import claim_run
from dcnprobe.attach.clock import HeldClock
from dcnprobe.attach.loader_proxy import LoaderPass, TimedIterator
from dcnprobe.attach.notes import ATTACH_RECORD
from dcnprobe.attach.overrides import Overrides
from dcnprobe.attach.phases import PhaseSpans, with_timed_closure
from dcnprobe.attach.ranks import this_rank
from dcnprobe.attach.recorder import Recorder
from dcnprobe.attach.states import AgentState, EpochMode, PassKind
from dcnprobe.attach.torch_hooks import TorchHooks
from dcnprobe.contract import AttachConfig
from dcnprobe.distributed.layout import RANK, rank_dir
from dcnprobe.hooks import ProbeListener, when_probe_created
from dcnprobe.launched import apply_launch
from dcnprobe.probe import Probe

CLAIMED_BY_LOADER = "dataloader"


class Agent:
    def __init__(self, config: AttachConfig, clock=time.perf_counter) -> None:
        self.config = config
        self.clock = HeldClock(clock)
        # The hooks' own readings: never taken while the clock is held (a hold lasts for one
        # call into the probe), so they read the running clock without asking the hold.
        self._read = clock
        self.pid = os.getpid()
        self.state = AgentState.IDLE
        self.overrides = Overrides(config.settings)
        self.hooks = TorchHooks(self)
        self.probe: Any = None
        self.recorder: Recorder | None = None
        self.status = "ok"
        self.ended_by: str | None = None
        self._building_probe = False
        self._loaders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loader -> its number
        self._models: weakref.WeakSet = weakref.WeakSet()  # outermost modules seen training
        # The outermost modules called since the forward hooks were last put on every module
        # (at each pass and epoch), and the optimizer steps counted then: one whole step later
        # the hooks move to these modules alone (TorchHooks.narrow).
        self._outermost: weakref.WeakSet = weakref.WeakSet()
        self._steps_when_widened = 0
        self._narrowed_to: list[Any] | None = None  # the modules hooked when paused
        self._device_known = False
        self._step_counts: dict[type, bool] = {}  # per optimizer class: its steps count (_wraps_an_optimizer)
        self.rank: dict[str, Any] | None = None  # the header's rank fields, in a distributed job
        # Nesting of forward, backward and step calls, kept from the start: a claim happens
        # only at an outermost call, and the recorder takes these over.
        self.phases = PhaseSpans(clock, lambda phase, seconds: None)
        clear = self.overrides.wanted.get("cache_clear", "never")
        self.clear_each_epoch = clear == "epoch"
        self.clear_every = int(clear.split(":")[1]) if clear.startswith("every:") else None

    @property
    def state(self) -> AgentState:
        return self._state

    @state.setter
    def state(self, state: AgentState) -> None:
        # Two flags the hooks read on every call, kept with the state rather than derived
        # from it each time: the hooks run between a model's kernels, where every call counts.
        self._state = state
        self.recording = state is AgentState.RECORDING
        self.idle = state is AgentState.IDLE

    # -- installation ----------------------------------------------------------------------

    def install(self) -> None:
        active.set_agent(self)
        when_probe_created(self._probe_created)
        self.hooks.install_settings()
        self.hooks.install_measuring()
        os.register_at_fork(after_in_child=self._forked)
        atexit.register(self._at_exit)

    def _probe_created(self, probe: Any) -> None:
        """Any Probe made in this process gets the launch's options (where to record, the
        early warning, profilers). One the script made itself means it measures itself:
        the agent stands down, so that nothing is counted twice."""
        if os.getpid() != self.pid:
            return
        rank = this_rank() if not self._building_probe else None  # the agent's own is placed already
        apply_launch(probe, _for_rank(self.config, rank[RANK]) if rank else self.config)
        if not self._building_probe:
            self.stand_down(probe)

    def _forked(self) -> None:
        # A forked DataLoader worker (or any fork) inherits this object: it must not record.
        # Only a flag here: a fork handler runs with one thread, and must do little.
        if self.state in (AgentState.IDLE, AgentState.RECORDING, AgentState.PAUSED):
            self.state = AgentState.OFF

    def _switch_off(self) -> None:
        self.state = AgentState.OFF
        self.hooks.remove_measuring()

    # -- the claim and the record -------------------------------------------------------------

    def _claim(self, trigger: str, loader: Any = None) -> bool:
        if self.state is AgentState.RECORDING:
            return True
        if self.state is not AgentState.IDLE:
            return False
        if os.getpid() != self.pid:
            self._switch_off()
            return False
        # Each rank of a distributed job records into its own directory; there it is the
        # first of its processes to train, as a single run's is in the run directory.
        self.rank = this_rank()
        if self.rank is not None:
            self.config = _for_rank(self.config, self.rank["rank"])
        if not claim_run(self.config.run_dir, self.config.launch_id):
            self._switch_off()  # another process of this launch records
            return False
        try:
            self._start_recording(trigger, loader)
        except Exception as exc:  # the script goes on unprobed rather than failing in our hook
            print(f"dcnprobe: warning: cannot record this run: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._switch_off()
            return False
        return True

    def _start_recording(self, trigger: str, loader: Any) -> None:
        if self.config.epoch_every:
            mode = EpochMode.EVERY_N_STEPS
        else:  # with no loader in flight, only mark_epoch() can end an epoch
            mode = EpochMode.LOADER_PASS if trigger == CLAIMED_BY_LOADER else EpochMode.MARKED
        self._building_probe = True
        try:
            self.probe = Probe(self.config.run_dir, device=_guess_device(), clock=self.clock)
        finally:
            self._building_probe = False
        if self.rank is not None:
            # The other ranks of the job (the launcher's other children and their workers)
            # share this machine by design: their CPU is the job's, not outside load.
            self.probe.reader.job_root = os.getppid()
        self.recorder = Recorder(self.probe, self.config, mode, self.clock, phases=self.phases,
                                 clear_cache=self._clear_cache, clear_each_epoch=self.clear_each_epoch,
                                 clear_every=self.clear_every, end_run=self._end_run, epoch_began=self._relearn_modules,
                                 start_record=lambda p: self._write_header(trigger, p, loader))
        self.state = AgentState.RECORDING
        if mode is not EpochMode.LOADER_PASS:  # the first epoch begins with this very step
            self.recorder.ensure_started()

    def _write_header(self, trigger: str, training: LoaderPass | None, claim_loader: Any) -> None:
        """The run's header, when its first epoch begins: the settings observed are those
        of the loader that epoch iterates (else of the loader that started the recording)."""
        number = training.loader_number if training is not None else None
        if number is None and claim_loader is not None:
            number = self._loaders.get(claim_loader)
        built = self.overrides.loaders[number - 1] if number else None
        self.probe.start({
            **(self.rank or {}),  # before the listeners start: the live warning names the rank
            "attached": True,
            "boundaries": self.recorder.boundaries(),
            "settings": self.overrides.observed(built, torch.get_num_threads()),
            "attach": {**self._settings_summary(), "max_batches": self.config.max_batches,
                       "epochs": self.config.epochs, "epoch_every": self.config.epoch_every,
                       "claimed_by": trigger},
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        })

    def _settings_summary(self) -> dict[str, Any]:
        return self.overrides.summary(loaders_seen=bool(self.overrides.loaders))

    def _finish(self, status: str) -> None:
        if self.state not in (AgentState.RECORDING, AgentState.PAUSED):
            return
        rec = self.recorder
        rec.finish()
        mode = rec.mode
        if mode is EpochMode.MARKED and not rec.mark_called and rec.epochs_done <= 1:
            unseen = "no epoch boundary seen: pass --epoch-every N, or call dcnprobe.mark_epoch() at each epoch's end"
        else:
            unseen = None
        summary = self._settings_summary()
        if self.config.max_batches is not None and mode is not EpochMode.LOADER_PASS:
            summary["not_applied"]["max_batches"] = f"epochs came from {mode.value}, not DataLoader passes to cut short"
        guesses = rec.guesses + self.hooks.collectives.notes
        self.probe.event(ATTACH_RECORD, final=True, boundaries=rec.boundaries(), ended_by=self.ended_by,
                         steps=rec.steps, steps_outside_epochs=rec.steps_outside_epochs, problem=unseen,
                         guesses=guesses, **summary)
        self.state = AgentState.OFF
        self.probe.finish(status)

    def _at_exit(self) -> None:
        if os.getpid() != self.pid:
            return
        # Python sets sys.last_type when it has printed an uncaught exception, before
        # exit handlers run; unlike a wrapped excepthook, a script cannot replace it.
        uncaught = getattr(sys, "last_type", None)
        if uncaught is not None:
            self.status = "interrupted" if issubclass(uncaught, KeyboardInterrupt) else "crashed"
        self._finish(self.status)

    def _end_run(self, reason: str) -> NoReturn:
        """A bound from outside was reached: end the run cleanly, exit code 0."""
        self.ended_by = reason
        self._finish("ok")
        raise SystemExit(0)

    def _clear_cache(self) -> float:
        began = self.clock()
        from dcnprobe.devices import backend_for  # only when a run clears caches

        backend_for(self.probe.device).empty_cache()
        return self.clock() - began

    # -- what the script tells us ---------------------------------------------------------------

    def stand_down(self, api_probe: Any) -> None:
        """The script made its own Probe (which records into the same run directory)."""
        if self._building_probe or os.getpid() != self.pid:
            return
        if self.state is AgentState.RECORDING and not self.recorder.started:
            self.state = AgentState.OFF  # nothing written yet: nothing to keep
        elif self.state is AgentState.RECORDING:  # it measured before making its Probe: keep ours apart
            self._finish("ok")
            os.replace(self.probe.writer.path, self.probe.writer.path.with_name("attach-run.jsonl"))
        if self.state in (AgentState.IDLE, AgentState.OFF):
            self.hooks.remove_measuring()
        self.state = AgentState.STOOD_DOWN
        api_probe.add_listener(_SettingsNotes(api_probe, self))

    def pause(self) -> None:
        """Switch measuring off between batches: the batch under way is recorded now, as
        the loop's next request for data would have, and the hooks come off until resume().
        The overhead benchmark alternates paused and measured batches in one loop, so that
        the machine's drift cancels between neighbours."""
        if not self.recording or not self._between_calls():
            return
        self._narrow_if_learnt()
        self.close_batch()
        self._narrowed_to = list(self._outermost) if self.hooks.narrowed else None
        self.hooks.remove_measuring()
        self.state = AgentState.PAUSED

    def close_batch(self) -> None:
        """Record the batch under way now, if anything happened in it (between calls only)."""
        if self.recording and self._between_calls():
            self.recorder.ledger_pause()

    def resume(self) -> None:
        """Measuring on again, with the forward hooks where they were."""
        if self.state is not AgentState.PAUSED:
            return
        self.hooks.install_measuring()
        if self._narrowed_to is not None:
            self.hooks.narrow(self._narrowed_to)
            self._narrowed_to = None  # no reference to the script's modules kept
        self.state = AgentState.RECORDING

    def mark_epoch(self) -> None:
        if self.recording:
            self.recorder.mark()

    # -- DataLoader passes ----------------------------------------------------------------------------

    def loader_built(self, loader: Any) -> None:
        if os.getpid() != self.pid:
            return
        built = self.overrides.loader_built(loader)
        self._loaders[loader] = built["loader"]
        if self.recording:
            self.recorder.note(loader_built=built)

    def iterate(self, loader: Any, iterate: Any) -> Any:
        """DataLoader.__iter__, attached."""
        why = self._validation_reason()
        if self.idle:
            self._claim(CLAIMED_BY_LOADER, loader)
        if not self.recording:
            return iterate(loader)
        loader_pass = self.recorder.pass_started(id(loader), self._loaders.get(loader), why, _length(loader))
        self._relearn_modules()  # a new pass may call other modules (an epoch's, a validation's)
        return TimedIterator(iterate(loader), loader_pass, self)

    def next_item(self, loader_pass: LoaderPass, iterator: Any) -> Any:
        if not self.recording or loader_pass.ended:
            return next(iterator)
        if not self.hooks.narrowed:
            self._narrow_if_learnt()
        rec = self.recorder
        if rec.item_requested(loader_pass):
            raise StopIteration  # max_batches from outside: the loop sees the loader run out
        # A training pass's first wait counts from iter(): where workers are started.
        began = loader_pass.first_wait_from or self._read()
        loader_pass.first_wait_from = None
        try:
            item = next(iterator)
        except StopIteration:
            if self.recording:
                rec.pass_exhausted(loader_pass)
            raise
        rec.item_received(loader_pass, self._read() - began)
        return item

    def pass_dropped(self, loader_pass: LoaderPass) -> None:
        if self.recording and not loader_pass.ended:
            self.recorder.pass_dropped(loader_pass)

    def _validation_reason(self) -> str | None:
        """The state a pass begins in that suggests validation: a hint, decided later by
        what happens in the pass."""
        if torch.is_inference_mode_enabled():
            return "inference_mode"
        if not torch.is_grad_enabled():
            return "no_grad"
        if any(not model.training for model in self._models):
            return "eval-mode"
        return None

    # -- forward, backward, optimizer ----------------------------------------------------------

    def forward_starting(self, module: Any, args: Any) -> None:
        phases = self.phases
        if phases.forward_depth or phases.backward_depth:
            # A child module (or a recomputation inside backward): only the nesting counts.
            # The hot path: every module of the model passes here twice a batch.
            phases.forward_depth += 1
            return
        grad = torch.is_grad_enabled()
        learning = not self.hooks.narrowed  # once narrowed, the hooked modules are those learnt
        if learning:
            self._outermost.add(module)
            self.hooks.collectives.adopt(module)  # a DDP module: its gradient all-reduce, timed
        if self.idle and not phases.step_depth and module.training and grad:
            self._claim("forward")
        if not self.recording:
            phases.forward_begin(timed=False)
            return
        if learning and module.training and grad:
            self._models.add(module)
        self.recorder.forward_began(module.training, grad)

    def forward_ended(self, module: Any, args: Any, output: Any) -> None:
        phases = self.phases
        if phases.forward_depth > 1:  # a child module's end (see forward_starting)
            phases.forward_depth -= 1
            return
        if self.recording:
            self.recorder.forward_ended()
        else:
            phases.forward_end()

    def backward_starting(self) -> None:
        if self.idle and not (self.phases.backward_depth or self.phases.step_depth):
            self._claim("backward")
        if self.recording:
            self.recorder.backward_began()
        else:
            self.phases.backward_begin()

    def backward_ended(self) -> None:
        collectives = self.hooks.collectives
        if collectives.launched and self.phases.backward_depth == 1:  # the outermost: DDP waited for its buckets here
            waited = collectives.backward_wait()
            if waited:
                self.collective_waited(waited)
        if self.recording:
            self.recorder.backward_ended()
        else:
            self.phases.backward_end()

    def _between_calls(self) -> bool:
        phases = self.phases
        return not (phases.forward_depth or phases.backward_depth or phases.step_depth)

    def _relearn_modules(self) -> None:
        """Learn the outermost modules afresh, over the next step, at each pass over a
        DataLoader and each epoch: one that only a later epoch calls (a second model trained
        from epoch 2) is timed from its first batch on."""
        if self.hooks.narrowed and self._between_calls():
            self.hooks.widen()
            self._outermost = weakref.WeakSet()
            self._steps_when_widened = self.recorder.steps

    def _narrow_if_learnt(self) -> None:
        """A whole step has passed since the hooks went on every module: move them to the
        outermost modules it showed. Asked when the loop requests the next batch (so that
        the second batch of a pass runs narrowed) and at each step (loops with no loader)."""
        if not self.hooks.narrowed and self.recorder.steps > self._steps_when_widened and self._between_calls():
            self.hooks.narrow(list(self._outermost))

    def collective_waited(self, seconds: float) -> None:
        """Time blocked in a collective (dcnprobe.attach.collectives), on the training thread."""
        if seconds > 0 and self.recording:
            self.phases.collective(seconds)

    def step_starting(self, optimizer: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if self.idle and not self.phases.step_depth:
            self._claim("optimizer-step")
        if not self.recording:
            self.phases.step_begin()
            return None
        if not self._device_known:
            self._learn_device(optimizer)
        if not self.hooks.narrowed:
            self._narrow_if_learnt()
        self.recorder.step_began()
        return with_timed_closure(self.phases, args, kwargs)  # torch steps with what this returns

    def step_ended(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.recording:
            kind = type(optimizer)
            counts = self._step_counts.get(kind)
            if counts is None:
                counts = self._step_counts[kind] = not _wraps_an_optimizer(optimizer)
            self.recorder.step_ended(counts=counts)
        else:
            self.phases.step_end()

    def _learn_device(self, optimizer: Any) -> None:
        self._device_known = True
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                device = parameter.device
                if device != self.probe.device:
                    self.probe.use_device(device)
                    self.recorder.note(device=str(device))
                return


class _SettingsNotes(ProbeListener):
    """For a script with its own Probe: what the attach applied from outside goes into
    that Probe's record."""

    def __init__(self, probe: Any, agent: Agent) -> None:
        self.probe, self.agent = probe, agent

    def on_start(self, header: Any) -> None:
        self.probe.event(ATTACH_RECORD, **self.agent._settings_summary())

    def on_finish(self, status: str) -> None:
        self.probe.event(ATTACH_RECORD, final=True, **self.agent._settings_summary())


def _for_rank(config: AttachConfig, rank: int) -> AttachConfig:
    """The launch's config for one rank: its record, and its profiles, in RUN/rankN."""
    run_dir = Path(config.run_dir)
    where = rank_dir(run_dir, rank)
    profile = config.profile
    if profile and profile.get("out"):
        out = Path(profile["out"])
        moved = where / out.relative_to(run_dir) if out.is_relative_to(run_dir) else out / where.name
        profile = {**profile, "out": str(moved)}
    return dataclasses.replace(config, run_dir=str(where), profile=profile)


def _wraps_an_optimizer(optimizer: Any) -> bool:
    """accelerate's AcceleratedOptimizer (and wrappers like it) hold the real optimizer as
    `.optimizer` and skip its step while gradients accumulate: only the inner step counts."""
    return isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer)


def _length(loader: Any) -> int | None:
    """Batches in a full pass, when the loader knows (an IterableDataset may not)."""
    try:
        return len(loader)
    except TypeError:
        return None


def _guess_device() -> str:
    """Before the first optimizer step shows the parameters' device: CUDA if the script
    has started it, else CPU (MPS has no 'started' to ask about)."""
    return "cuda" if torch.cuda.is_available() and torch.cuda.is_initialized() else "cpu"


__all__ = ["Agent", "AgentState", "PassKind"]
