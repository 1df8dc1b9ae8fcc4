"""Started by Python itself in every process of a launched command, because a launcher
(`dcnprobe run`, a trial) put this folder first on PYTHONPATH.

Two jobs, in this order:
1. Load the `sitecustomize` that would have run without us (one later on sys.path: a
   virtualenv's, a distribution's), so attaching changes nothing else about the process.
2. When DCNPROBE_ATTACH is set, hand over to dcnprobe.attach.bootstrap, which decides
   whether this process is one to measure. When it is unset, nothing else happens.
"""

import os
import sys


def _chain_load() -> None:
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    others = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module  # as if it had been the one imported
    spec.loader.exec_module(module)


def _attach() -> None:
    try:
        from dcnprobe.attach import bootstrap
    except ImportError as exc:  # a Python without dcnprobe: run the command unprobed, and say so
        print(f"dcnprobe: warning: cannot attach the probe in {sys.executable}: {exc}", file=sys.stderr)
        return
    bootstrap.start()


try:
    _chain_load()
finally:
    if os.environ.get("DCNPROBE_ATTACH"):
        _attach()
