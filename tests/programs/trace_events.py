"""python trace_events.py PROGRAM ARGS...: run PROGRAM and print, at exit, the sequence of
PyTorch events it produced, in the notation tests/test_attach_states.py replays on the
attach's state machine. Knows nothing of dcnprobe; for capturing how a framework (a new
Lightning or Trainer release) drives its loaders, forwards, backwards and optimizers.

    ITERk[N|I|E] iter() on DataLoader k (numbered in order of first use), under no_grad (N)
                 or inference_mode (I), or with a model seen training now in eval mode (E)
    nk STOPk     next() on it gave a batch / ran out;   DELk  its iterator was dropped
    Ft Fe        an outermost module forward in train / eval mode (N: without gradients)
    B            torch.autograd.backward
    S< ... >     an optimizer step;  ( ... )  the closure it was given, running
"""

import atexit
import os
import runpy
import sys
import weakref

import torch
from torch.nn.modules import module as nn_module
from torch.optim import optimizer as optim_module
from torch.utils.data import DataLoader

events: list[str] = []
numbers: dict[int, int] = {}
depth = [0]
trained: weakref.WeakSet = weakref.WeakSet()  # outermost modules seen training with gradients


def grad_state() -> str:
    if torch.is_inference_mode_enabled():
        return "I"
    return "" if torch.is_grad_enabled() else "N"


def pass_state() -> str:
    state = grad_state()
    return state or ("E" if any(not module.training for module in trained) else "")


class Traced:
    def __init__(self, iterator, number: int) -> None:
        self.iterator, self.number = iterator, number

    def __iter__(self):
        return self

    def __next__(self):
        try:
            item = next(self.iterator)
        except StopIteration:
            events.append(f"STOP{self.number}")
            raise
        events.append(f"n{self.number}")
        return item

    def __len__(self) -> int:
        return len(self.iterator)

    def __getattr__(self, name):
        return getattr(self.iterator, name)

    def __del__(self) -> None:
        events.append(f"DEL{self.number}")


original_iter = DataLoader.__iter__


def traced_iter(loader):
    number = numbers.setdefault(id(loader), len(numbers) + 1)
    events.append(f"ITER{number}{pass_state()}")
    return Traced(original_iter(loader), number)


def forward_pre(module, args) -> None:
    depth[0] += 1
    if depth[0] == 1:
        events.append(("Ft" if module.training else "Fe") + grad_state())
        if module.training and torch.is_grad_enabled():
            trained.add(module)


def forward_post(module, args, output) -> None:
    depth[0] -= 1


original_backward = torch.autograd.backward


def traced_backward(*args, **kwargs):
    events.append("B")
    return original_backward(*args, **kwargs)


def step_pre(optimizer, args, kwargs):
    events.append("S<")
    closure = kwargs.get("closure") or (args[1] if len(args) > 1 and callable(args[1]) else None)
    if closure is None:
        return None

    def traced_closure(*a, **k):
        events.append("(")
        try:
            return closure(*a, **k)
        finally:
            events.append(")")

    if "closure" in kwargs:
        return args, {**kwargs, "closure": traced_closure}
    return (args[0], traced_closure, *args[2:]), kwargs


def main() -> None:
    DataLoader.__iter__ = traced_iter
    torch.autograd.backward = traced_backward
    nn_module.register_module_forward_pre_hook(forward_pre)
    nn_module.register_module_forward_hook(forward_post, always_call=True)
    optim_module.register_optimizer_step_pre_hook(step_pre)
    optim_module.register_optimizer_step_post_hook(lambda *_: events.append(">"))
    atexit.register(lambda: print("events:", " ".join(events), file=sys.stderr))
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
