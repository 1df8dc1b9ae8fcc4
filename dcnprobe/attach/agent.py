"""The attach agent: measures an unmodified training script through public PyTorch hooks
(dcnprobe.attach.torch_hooks) into a normal run record, by driving a Probe.

Boundaries, and how they are found (the header's `boundaries` says which applied):
    batch   optimizer-step: a batch is the work around one optimizer step. It is closed
            when the loop asks for the next batch (next() on the training loader; with no
            loader, the next training forward or backward), so that work after the step
            (logging, metrics) counts in its `other`; at a pass's or the run's end otherwise.
    epoch   dataloader-pass: one pass over the training DataLoader. A pass under no_grad or
            inference_mode, or with the model in eval mode, or in which no optimizer step
            happened, is validation: a `validation` record, never an epoch.
            epoch-every: every N optimizer steps (AttachConfig.epoch_every), for loops with
            no DataLoader; mark_epoch: where the script calls dcnprobe.mark_epoch().
Phases: data_wait (blocked in next()), forward (the outermost module's forward in train
mode), backward (torch.autograd.backward), optimizer (the step hooks), cache_clear (the
attach's own clearing), other, total.

Which process records: the first of the launch to start training claims the run
directory (dcnprobe.attach.claim). Forked DataLoader workers inherit the agent and are
switched off at fork; spawned ones never get it (dcnprobe.attach.bootstrap). A script
that creates a Probe itself is left to it (`stand_down`).
"""

from __future__ import annotations

import atexit
import os
import sys
import time
import weakref
from typing import Any

import torch

from dcnprobe.attach import active
from dcnprobe.attach.claim import claim_run
from dcnprobe.attach.loader_proxy import LoaderPass, TimedIterator
from dcnprobe.attach.notes import ATTACH_RECORD, VALIDATION_RECORD
from dcnprobe.attach.overrides import Overrides
from dcnprobe.attach.torch_hooks import TorchHooks
from dcnprobe.contract import AttachConfig
from dcnprobe.hooks import DATA_WAIT, ProbeListener, when_probe_created
from dcnprobe.launched import apply_launch
from dcnprobe.probe import Probe

IDLE, RECORDING, STOOD_DOWN, OFF = "idle", "recording", "stood-down", "off"
PASS_MODE, EVERY_MODE, MARK_MODE = "dataloader-pass", "epoch-every", "mark_epoch"


class Agent:
    def __init__(self, config: AttachConfig, clock=time.perf_counter) -> None:
        self.config = config
        self.clock = clock
        self.pid = os.getpid()
        self.state = IDLE
        self.overrides = Overrides(config.settings)
        self.hooks = TorchHooks(self)
        self.probe: Any = None
        self.timer: Any = None
        self.mode = EVERY_MODE if config.epoch_every else None  # decided at the claim otherwise
        self.mark_called = False
        self.status = "ok"
        self.ended_by: str | None = None
        self._building_probe = False
        self._loaders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loader -> its number
        self._models: weakref.WeakSet = weakref.WeakSet()  # outermost modules seen training
        self._device_known = False
        # batch and epoch state
        self.stepped = False  # an optimizer step happened in the open batch
        self.steps = 0  # optimizer steps over the run
        self.steps_in_epoch = 0
        self.epochs_done = 0
        self.epoch_open = False  # epoch-every and mark_epoch modes: the probe's pass is open
        self.train_pass: LoaderPass | None = None
        self.steps_outside_epochs = 0
        # phase state
        self._forward_depth = 0
        self._forward_began = 0.0
        self._backward_depth = 0
        self._step_depth = 0
        self._step_began = 0.0
        clear = self.overrides.wanted.get("cache_clear", "never")
        self.clear_each_epoch = clear == "epoch"
        self.clear_every = int(clear.split(":")[1]) if clear.startswith("every:") else None

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
        apply_launch(probe, self.config)
        if not self._building_probe:
            self.stand_down(probe)

    def _forked(self) -> None:
        # A forked DataLoader worker (or any fork) inherits this object: it must not record.
        # Only a flag here: a fork handler runs with one thread, and must do little.
        if self.state in (IDLE, RECORDING):
            self.state = OFF

    def _switch_off(self) -> None:
        self.state = OFF
        self.hooks.remove_measuring()

    # -- the claim and the record -------------------------------------------------------------

    def _claim(self, trigger: str, loader: Any = None) -> bool:
        if self.state is RECORDING:
            return True
        if self.state is not IDLE:
            return False
        if os.getpid() != self.pid or not claim_run(self.config.run_dir, self.config.launch_id):
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
        if self.mode is None:
            # With no loader in flight, only mark_epoch() can end an epoch.
            self.mode = PASS_MODE if trigger == "dataloader" else MARK_MODE
        self._building_probe = True
        try:
            self.probe = Probe(self.config.run_dir, device=_guess_device())
        finally:
            self._building_probe = False
        self.timer = self.probe.timer
        self.state = RECORDING
        # The loader whose pass started the recording is the training one, as far as is known.
        number = self._loaders.get(loader) if loader is not None else None
        built = self.overrides.loaders[number - 1] if number else None
        self.probe.start({
            "attached": True,
            "boundaries": self._boundaries(),
            "settings": self.overrides.observed(built, torch.get_num_threads()),
            "attach": {**self._settings_summary(), "max_batches": self.config.max_batches,
                       "epochs": self.config.epochs, "epoch_every": self.config.epoch_every,
                       "claimed_by": trigger},
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        })

    def _boundaries(self) -> dict[str, str]:
        return {"batch": "optimizer-step", "epoch": self.mode, "forward": "outermost-module-hooks"}

    def _settings_summary(self) -> dict[str, Any]:
        return self.overrides.summary(loaders_seen=bool(self.overrides.loaders))

    def _note(self, **fields: Any) -> None:
        if self.state is RECORDING:
            self.probe.event(ATTACH_RECORD, **fields)

    def _finish(self, status: str) -> None:
        if self.state is not RECORDING:
            return
        if self.train_pass is not None:
            self.pass_ended(self.train_pass)
        self._close_epoch()
        if self.mode == MARK_MODE and not self.mark_called and self.epochs_done <= 1:
            unseen = "no epoch boundary seen: pass --epoch-every N, or call dcnprobe.mark_epoch() at each epoch's end"
        else:
            unseen = None
        summary = self._settings_summary()
        if self.config.max_batches is not None and self.mode != PASS_MODE:
            summary["not_applied"]["max_batches"] = f"epochs came from {self.mode}, not DataLoader passes to cut short"
        self._note(final=True, boundaries=self._boundaries(), ended_by=self.ended_by, steps=self.steps,
                   steps_outside_epochs=self.steps_outside_epochs, problem=unseen, **summary)
        self.state = OFF
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

    def _end_run(self, reason: str) -> None:
        """A bound from outside was reached: end the run cleanly, exit code 0."""
        self.ended_by = reason
        self._finish("ok")
        raise SystemExit(0)

    # -- what the script tells us ---------------------------------------------------------------

    def stand_down(self, api_probe: Any) -> None:
        """The script made its own Probe (which records into the same run directory)."""
        if self._building_probe or os.getpid() != self.pid:
            return
        if self.state is RECORDING:  # it measured before making its Probe: keep ours apart
            self._finish("ok")
            os.replace(self.probe.writer.path, self.probe.writer.path.with_name("attach-run.jsonl"))
        if self.state in (IDLE, OFF):
            self.hooks.remove_measuring()
        self.state = STOOD_DOWN
        api_probe.add_listener(_SettingsNotes(api_probe, self))

    def mark_epoch(self) -> None:
        if self.state is not RECORDING:
            return
        if self.mode == EVERY_MODE:
            if not self.mark_called:
                self._note(ignored="mark_epoch(): epochs come from --epoch-every")
            self.mark_called = True
            return
        self.mark_called = True
        if self.mode == PASS_MODE:
            self.mode = MARK_MODE
            self._note(boundaries=self._boundaries())
            loader_pass = self.train_pass
            if loader_pass is not None:  # mid-pass: the pass's epoch ends here, the pass feeds on
                self._end_train_pass(loader_pass)
                loader_pass.kind = LoaderPass.FEED
            return  # otherwise the pass that just ended was the epoch being marked
        self._close_epoch()

    # -- batches and epochs -----------------------------------------------------------------------

    def _next_batch(self) -> None:
        """The loop asks for (or starts on) a batch: close the one that has had its step,
        and open one if none is open."""
        timer = self.timer
        if timer.in_batch:
            if not self.stepped:
                return
            self._close_batch()
        if self.mode == EVERY_MODE and self.epoch_open and self.steps_in_epoch >= self.config.epoch_every:
            self._close_epoch()
        if self.mode != PASS_MODE and not self.epoch_open:
            self._check_epochs_bound()
            self.probe.begin_pass()
            self.epoch_open = True
            self.steps_in_epoch = 0
        timer.begin()

    def _close_batch(self) -> None:
        self.stepped = False
        self.steps_in_epoch += 1
        self.probe.end_batch()

    def _close_epoch(self) -> None:
        """Epoch-every and mark_epoch modes: the epoch ends here."""
        if self.timer.in_batch:
            self._close_batch() if self.stepped else self.timer.cancel()
        if self.epoch_open:
            self.epoch_open = False
            self.probe.end_pass(counted=self.steps_in_epoch > 0)
            if self.steps_in_epoch > 0:
                self._epoch_done()

    def _epoch_done(self) -> None:
        self.epochs_done += 1
        if self.clear_each_epoch:
            self._clear_cache()

    def _check_epochs_bound(self) -> None:
        if self.config.epochs is not None and self.epochs_done >= self.config.epochs:
            self._end_run(f"epochs={self.config.epochs}")

    def _clear_cache(self) -> float:
        began = self.clock()
        from dcnprobe.devices import backend_for

        backend_for(self.probe.device).empty_cache()
        return self.clock() - began

    # -- DataLoader passes ----------------------------------------------------------------------------

    def loader_built(self, loader: Any) -> None:
        if os.getpid() != self.pid:
            return
        built = self.overrides.loader_built(loader)
        self._loaders[loader] = built["loader"]
        self._note(loader_built=built)

    def iterate(self, loader: Any, iterate: Any) -> Any:
        """DataLoader.__iter__, attached."""
        why = self._validation_reason()
        if self.state is IDLE:
            self._claim("dataloader", loader)
        if self.state is not RECORDING:
            return iterate(loader)
        number = self._loaders.get(loader)
        if why is not None:
            kind = LoaderPass.VALIDATION
        elif self.train_pass is not None:
            kind = LoaderPass.FEED
        elif self.mode == MARK_MODE and not self.mark_called:
            # Claimed by a step before any loader: a loader loop after all (a warm-up step).
            self._close_epoch()
            self.mode = PASS_MODE
            self._note(boundaries=self._boundaries())
            kind = LoaderPass.TRAIN
        else:
            kind = LoaderPass.TRAIN if self.mode == PASS_MODE else LoaderPass.FEED
        if kind is LoaderPass.TRAIN:
            self._check_epochs_bound()
        loader_pass = LoaderPass(kind, self.clock(), number, self.steps, why)
        if kind is LoaderPass.TRAIN:
            self.train_pass = loader_pass
            self.probe.begin_pass()
            self.timer.begin()
        return TimedIterator(iterate(loader), loader_pass, self)

    def next_item(self, loader_pass: LoaderPass, iterator: Any) -> Any:
        if self.state is not RECORDING or loader_pass.kind is LoaderPass.VALIDATION:
            try:
                item = next(iterator)
            except StopIteration:
                self.pass_ended(loader_pass)
                raise
            loader_pass.items += 1
            return item
        if loader_pass.kind is LoaderPass.TRAIN:
            limit = self.config.max_batches
            if limit is not None and self.steps - loader_pass.steps_at_start >= limit and self.stepped:
                self.pass_ended(loader_pass)
                raise StopIteration
            self._next_batch()
        elif self.mode != PASS_MODE:
            self._next_batch()
        # A training pass's first wait counts from iter(): where workers are started.
        began = (loader_pass.first_wait_from if loader_pass.kind is LoaderPass.TRAIN else None) or self.clock()
        loader_pass.first_wait_from = None
        try:
            item = next(iterator)
        except StopIteration:
            self.pass_ended(loader_pass)
            raise
        self.timer.add(DATA_WAIT, self.clock() - began)
        loader_pass.items += 1
        return item

    def pass_ended(self, loader_pass: LoaderPass) -> None:
        if loader_pass.ended:
            return
        loader_pass.ended = True
        if self.state is not RECORDING:
            return
        if loader_pass.kind is LoaderPass.VALIDATION:
            self._validation(loader_pass)
        elif loader_pass.kind is LoaderPass.TRAIN and loader_pass is self.train_pass:
            self._end_train_pass(loader_pass)

    def _end_train_pass(self, loader_pass: LoaderPass) -> None:
        self.train_pass = None
        if self.timer.in_batch:
            self._close_batch() if self.stepped else self.timer.cancel()
        trained = self.steps > loader_pass.steps_at_start
        self.probe.end_pass(counted=trained)
        if trained:
            self._epoch_done()
        else:
            loader_pass.why = "no optimizer step"
            self._validation(loader_pass)

    def _validation(self, loader_pass: LoaderPass) -> None:
        now = self.clock()
        self.probe.event(VALIDATION_RECORD, epoch=self.probe.epoch, loader=loader_pass.loader_number,
                         batches=loader_pass.items, duration_s=now - loader_pass.started, why=loader_pass.why)

    def _validation_reason(self) -> str | None:
        if torch.is_inference_mode_enabled():
            return "inference_mode"
        if not torch.is_grad_enabled():
            return "no_grad"
        if any(not model.training for model in self._models):
            return "eval-mode"
        return None

    # -- forward, backward, optimizer ----------------------------------------------------------

    def forward_starting(self, module: Any, args: Any) -> None:
        depth = self._forward_depth
        self._forward_depth = depth + 1
        if depth or not module.training or self._backward_depth or self._step_depth or not torch.is_grad_enabled():
            return
        if self.state is IDLE and not self._claim("forward"):
            return
        if self.state is not RECORDING:
            return
        self._models.add(module)
        if self.mode != PASS_MODE:
            self._next_batch()
        self._forward_began = self.clock()

    def forward_ended(self, module: Any, args: Any, output: Any) -> None:
        self._forward_depth -= 1
        if self._forward_depth == 0 and self._forward_began:
            self.timer.add("forward", self.clock() - self._forward_began)
            self._forward_began = 0.0

    def backward_starting(self) -> float:
        depth = self._backward_depth
        self._backward_depth = depth + 1
        if depth or self._step_depth:
            return 0.0
        if self.state is IDLE and not self._claim("backward"):
            return 0.0
        if self.state is not RECORDING:
            return 0.0
        if self.mode != PASS_MODE:
            self._next_batch()
        return self.clock()

    def backward_ended(self, began: float) -> None:
        self._backward_depth -= 1
        if began and self.state is RECORDING:
            self.timer.add("backward", self.clock() - began)

    def step_starting(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        depth = self._step_depth
        self._step_depth = depth + 1
        if depth:
            return
        if self.state is IDLE and not self._claim("optimizer-step"):
            return
        if self.state is not RECORDING:
            return
        if not self._device_known:
            self._learn_device(optimizer)
        if self.mode != PASS_MODE and not self.timer.in_batch:
            self._next_batch()
        self._step_began = self.clock()

    def step_ended(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._step_depth -= 1
        if self._step_depth or not self._step_began:
            return
        self._step_began, began = 0.0, self._step_began
        if self.state is not RECORDING:
            return
        self.timer.add("optimizer", self.clock() - began)
        self.steps += 1
        if not self.timer.in_batch:
            self.steps_outside_epochs += 1
            return
        self.stepped = True
        if self.clear_every and self.steps % self.clear_every == 0:
            self.timer.add("cache_clear", self._clear_cache())

    def _learn_device(self, optimizer: Any) -> None:
        self._device_known = True
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                device = parameter.device
                if device != self.probe.device:
                    self.probe.use_device(device)
                    self._note(device=str(device))
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


def _guess_device() -> str:
    """Before the first optimizer step shows the parameters' device: CUDA if the script
    has started it, else CPU (MPS has no 'started' to ask about)."""
    return "cuda" if torch.cuda.is_available() and torch.cuda.is_initialized() else "cpu"
