"""The attach's states and modes, named once.

    AgentState  whether this process records: IDLE until the first training event claims
                the run, then RECORDING; OFF in a process that must not record (a forked
                worker, a process that lost the claim); STOOD_DOWN when the script has a
                Probe of its own; PAUSED between batches while measuring is switched off
                (Agent.pause: the overhead benchmark's bare batches).
    EpochMode   where epochs come from (the header's `boundaries.epoch`): one pass over
                the training DataLoader, every N optimizer steps, or the script's
                dcnprobe.mark_epoch() calls. dcnprobe.attach.epochs has one strategy per mode.
    PassKind    what a pass over a DataLoader turned out to be. A top-level pass is
                UNDECIDED until what happens in it decides: a backward or an optimizer step
                makes it TRAINING (an epoch, in dataloader-pass mode); a pass that ends
                without either is VALIDATION. A pass begun inside a training pass is FEED
                (more data for the same batches) or, begun under no_grad, inference_mode or
                with the model in eval mode, VALIDATION.
"""

from __future__ import annotations

from enum import Enum


class AgentState(Enum):
    IDLE = "idle"
    RECORDING = "recording"
    STOOD_DOWN = "stood-down"
    OFF = "off"
    PAUSED = "paused"


class EpochMode(Enum):
    LOADER_PASS = "dataloader-pass"
    EVERY_N_STEPS = "epoch-every"
    MARKED = "mark_epoch"


class PassKind(Enum):
    UNDECIDED = "undecided"
    TRAINING = "training"
    FEED = "feed"
    VALIDATION = "validation"
