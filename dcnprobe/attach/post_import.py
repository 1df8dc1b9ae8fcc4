"""Run a function right after a module is first imported, without importing it ourselves.

The attach must not import torch into processes that never use it (a launcher script,
a tool the training script calls): that alone costs a second or more. So the agent is
installed by a finder on sys.meta_path that waits for `import torch` and calls back once
the module has finished executing, before the importing code sees it.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

Callback = Callable[[ModuleType], None]


def when_imported(name: str, callback: Callback) -> None:
    """Call `callback(module)` once `name` (a top-level module) has been imported; at once
    if it already has been."""
    if name in sys.modules:
        callback(sys.modules[name])
        return
    sys.meta_path.insert(0, _WaitFor(name, callback))


class _WaitFor(importlib.abc.MetaPathFinder):
    def __init__(self, name: str, callback: Callback) -> None:
        self.name, self.callback = name, callback

    def find_spec(self, fullname: str, path: Any = None, target: Any = None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once only; and the real finders answer the question below
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _ThenCall(spec.loader, self.callback)
        return spec


class _ThenCall(importlib.abc.Loader):
    """The module's own loader, followed by the callback."""

    def __init__(self, loader: importlib.abc.Loader, callback: Callback) -> None:
        self.loader, self.callback = loader, callback

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        # Put the real loader back: nothing after this should see ours.
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.callback(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)
