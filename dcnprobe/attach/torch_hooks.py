"""The public PyTorch hooks the agent measures through, installed and removed in one place.

    DataLoader.__init__          settings from outside; what each loader was built with
    DataLoader.__iter__          a TimedIterator: data_wait, passes (epochs, validation)
    torch.autograd.backward      backward (Tensor.backward calls it)
    optimizer step pre/post      optimizer; a batch ends at the step
    module forward pre/post      forward of the outermost module; train or eval mode:
                                 on every module while the agent learns which modules
                                 are called outermost, then on those alone (`narrow`)
    torch.set_num_threads        the script's own calls yield to `threads` from outside
    torch.distributed, DDP       time blocked in collectives (dcnprobe.attach.collectives)

The settings hooks stay for the life of the process; the measuring ones are removed when
the agent stops measuring (another process recorded, or the script uses the Probe API).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
from torch.nn.modules import module as nn_module
from torch.optim import optimizer as optim_module
from torch.utils.data import DataLoader

from dcnprobe.attach.collectives import Collectives
from dcnprobe.attach.overrides import bind_loader_arguments


class TorchHooks:
    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self._originals: dict[tuple[Any, str], Any] = {}
        self._handles: list[Any] = []
        self._forward_handles: list[Any] = []  # the global forward hooks, or those on the outermost modules
        self.narrowed = False
        # Bucket completions are noted on communication threads: the running clock, never
        # the agent's held reading.
        self.collectives = Collectives(lambda seconds: agent.collective_waited(seconds), agent.clock.clock)

    # -- settings: for the life of the process ---------------------------------------------

    def install_settings(self) -> None:
        agent = self.agent
        init = DataLoader.__init__

        @functools.wraps(init)
        def __init__(loader, *args, **kwargs):
            if not agent.overrides.loader_settings or os.getpid() != agent.pid:
                init(loader, *args, **kwargs)
            else:
                bound = bind_loader_arguments(init, loader, args, kwargs)
                agent.overrides.rewrite_loader_arguments(bound.arguments)
                init(*bound.args, **bound.kwargs)
            agent.loader_built(loader)

        self._patch(DataLoader, "__init__", __init__)

        if "threads" in agent.overrides.wanted:
            set_threads = torch.set_num_threads
            set_threads(agent.overrides.wanted["threads"])

            @functools.wraps(set_threads)
            def set_num_threads(count: int) -> None:
                # Only the training process: a DataLoader worker sets its own single thread.
                if os.getpid() != agent.pid:
                    set_threads(count)
                else:
                    agent.overrides.script_threads.append(int(count))

            self._patch(torch, "set_num_threads", set_num_threads)

    # -- measuring ---------------------------------------------------------------------------

    def install_measuring(self) -> None:
        agent = self.agent
        iterate = DataLoader.__iter__

        @functools.wraps(iterate)
        def __iter__(loader):
            return agent.iterate(loader, iterate)

        self._patch(DataLoader, "__iter__", __iter__)

        backward = torch.autograd.backward

        @functools.wraps(backward)
        def timed_backward(*args, **kwargs):
            agent.backward_starting()
            try:
                return backward(*args, **kwargs)
            finally:
                agent.backward_ended()

        self._patch(torch.autograd, "backward", timed_backward)

        self._handles += [
            optim_module.register_optimizer_step_pre_hook(agent.step_starting),
            optim_module.register_optimizer_step_post_hook(agent.step_ended),
        ]
        self.widen()
        self.collectives.install()

    def widen(self) -> None:
        """Forward hooks on every module: how the agent finds the outermost ones. A global
        hook costs every module call of the model (torch's slow call path, about 4 us a
        call here), which is why it is only on while the agent learns."""
        self._remove_forward()
        self._forward_handles = [
            nn_module.register_module_forward_pre_hook(self.agent.forward_starting),
            nn_module.register_module_forward_hook(self.agent.forward_ended, always_call=True),
        ]
        self.narrowed = False

    def narrow(self, modules: list[Any]) -> None:
        """Forward hooks on `modules` alone (the outermost ones seen): their children run
        torch's fast call path. Call only between forwards."""
        self._remove_forward()
        agent = self.agent
        for module in modules:
            self._forward_handles += [module.register_forward_pre_hook(agent.forward_starting),
                                      module.register_forward_hook(agent.forward_ended, always_call=True)]
        self.narrowed = True

    def _remove_forward(self) -> None:
        for handle in self._forward_handles:
            handle.remove()
        self._forward_handles = []

    def remove_measuring(self) -> None:
        self.collectives.remove()
        self._remove_forward()
        self.narrowed = False
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for owner, name in ((DataLoader, "__iter__"), (torch.autograd, "backward")):
            original = self._originals.pop((owner, name), None)
            if original is not None:
                setattr(owner, name, original)

    def _patch(self, owner: Any, name: str, replacement: Any) -> None:
        self._originals.setdefault((owner, name), getattr(owner, name))
        setattr(owner, name, replacement)
