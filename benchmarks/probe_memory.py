"""What the probe costs in memory inside the process it measures, and what it imports.

Each measurement is a fresh process that imports torch, builds a small loop (a linear
model over a TensorDataset, loaded in the main process), and reads its own USS (psutil:
pages only this process holds) at three points: after torch, after importing the probe,
and after 200 batches. No DataLoader workers: forked workers share the parent's pages,
which then leave its USS, and would hide what the probe imported. A bare process runs the same loop without the probe. Runs alternate
(probed, bare, probed, ...) and the medians are reported:

    import_mb   USS added by `import dcnprobe.probe` (and the launch wiring)
    steady_mb   USS after 200 batches, probed minus bare: the probe's imports, its sampler
                thread, its record writer, its timers
    modules     what the import added to sys.modules that matters: pandas, matplotlib,
                the analysis (none of these may load in the probed process)

    python -m dcnprobe.benchmarks.probe_memory [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from typing import Any

CHILD = r"""
import json, os, sys, tempfile
import psutil, torch
torch.set_num_threads(1)
me = psutil.Process()
uss = lambda: me.memory_full_info().uss
before = set(sys.modules)
at_torch = uss()
probed = sys.argv[1] == "probe"
if probed:
    from dcnprobe.probe import Probe
    if hasattr(Probe, "write_event"):
        from dcnprobe.launched import warn_on_slowdown
    else:  # a dcnprobe from before the probe only recorded: it warned by itself
        warn_on_slowdown = lambda probe: None
at_import = uss()
added = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in ("pandas", "matplotlib")
               or m.startswith(("dcnprobe.analysis", "dcnprobe.runs")))
model = torch.nn.Linear(32, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
data = torch.utils.data.TensorDataset(torch.randn(6400, 32), torch.randn(6400, 1))
loader = torch.utils.data.DataLoader(data, batch_size=32)
def steps(batches):
    for x, y in batches:
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        yield
if probed:
    probe = Probe(tempfile.mkdtemp())
    warn_on_slowdown(probe)
    with probe:
        for _ in steps(probe.loader(loader)):
            probe.end_batch()
else:
    for _ in steps(loader):
        pass
print(json.dumps({"at_torch": at_torch, "at_import": at_import, "at_end": uss(), "added_modules": added}))
"""

MB = 1 << 20


def _once(mode: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, cwd=cwd,
                              timeout=300)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(runs: int = 5) -> dict[str, Any]:
    probed, bare = [], []
    for _ in range(runs):
        probed.append(_once("probe"))
        bare.append(_once("bare"))
    import_mb = statistics.median((p["at_import"] - p["at_torch"]) / MB for p in probed)
    steady_mb = statistics.median(p["at_end"] for p in probed) / MB - statistics.median(b["at_end"] for b in bare) / MB
    return {"import_mb": round(import_mb, 1), "steady_mb": round(steady_mb, 1),
            "modules": sorted({m for p in probed for m in p["added_modules"]}), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dcnprobe.benchmarks.probe_memory",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="probed and bare processes each")
    args = parser.parse_args(argv)
    result = measure(args.runs)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
