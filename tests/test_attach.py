"""The probe attached from outside to scripts that know nothing of it (examples/ and
small scripts written here): the record's epochs and batches match the script's own
counts, validation is not an epoch, settings applied from outside reach the workers.

Every test runs a real script in a real subprocess through `dcnprobe run`, at tiny sizes.
No wall-clock assertions here: those are in the slow tests.
"""

import json
import re
import sys
from pathlib import Path

import pytest
from attach_scripts import MARK_EPOCH, PROBE_API, STARTS_A_NESTED_TRAINER

from dcnprobe.attach.notes import read_notes
from dcnprobe.cli import main
from dcnprobe.hooks import BATCH_TIMES
from dcnprobe.runs import read_run

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# One intra-op thread (applied from outside): a 2-core machine shared by other work stays responsive.
QUIET = ["--threads", "1", "--sample-interval", "0.05"]


def dcnprobe_run(capsys, *args):
    """`dcnprobe run ARGS` in this process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def script_counts(stdout):
    """{epoch: batches} from the script's own 'epoch N: B batches' lines."""
    return {int(e): int(b) for e, b in re.findall(r"^epoch (\d+): (\d+) batches", stdout, re.M)}


def record_counts(run):
    return run.batches.groupby("epoch").size().to_dict()


def attached_script(tmp_path, capsys, source, *options):
    """Run `source` as a script under `dcnprobe run` with `options`; it must exit 0.
    Returns its stdout and the run directory."""
    script = tmp_path / "script.py"
    script.write_text(source)
    out = tmp_path / "run"
    code, stdout, _ = dcnprobe_run(capsys, "--out", str(out), *QUIET, *options, "--", sys.executable, str(script))
    assert code == 0
    return stdout, out


def test_per_sample_loop_with_workers_from_outside_and_bounds(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = dcnprobe_run(
        capsys, "--out", str(out), *QUIET, "--num-workers", "2", "--persistent-workers", "--max-batches", "6",
        "--epochs", "2", "--", sys.executable, str(EXAMPLES / "per_sample_loop.py"), "--rows", "1024",
        "--epochs", "3")
    assert code == 0  # --epochs 2 ends the 3-epoch script cleanly
    run = read_run(out)
    assert script_counts(stdout) == {1: 6, 2: 6} == record_counts(run)
    assert run.epochs["epoch"].tolist() == [1, 2] and run.epochs["batches"].tolist() == [6, 6]
    assert run.status == "ok" and run.header["boundaries"]["epoch"] == "dataloader-pass"
    assert run.batches[list(BATCH_TIMES)].notna().all().all()
    for phase in ("data_wait", "forward", "backward", "optimizer", "total"):
        assert (run.batches[phase] > 0).all(), phase
    # The script asked for no workers; two persistent ones from outside served both epochs.
    assert run.header["settings"]["num_workers"] == 2 and run.header["settings"]["persistent_workers"] is True
    assert run.workers["pid"].nunique() == 2
    notes = read_notes(out)
    assert notes["final"]["ended_by"] == "epochs=2"
    assert notes["final"]["applied"] == {"threads": 1, "num_workers": 2, "persistent_workers": True}
    assert notes["final"]["loaders"][0]["num_workers"] == 2
    assert "record:" in stdout and (out / "analysis.json").exists()


SECOND_MODEL_FROM_EPOCH_2 = """
import time
import torch
from torch import nn
from torch.nn.modules import module as nn_module
from torch.utils.data import DataLoader, TensorDataset


class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, x):
        time.sleep(0.02)  # a forward that takes at least 20 ms
        return self.linear(x)


torch.manual_seed(0)
loader = DataLoader(TensorDataset(torch.randn(48, 4), torch.rand(48, 1)), batch_size=8)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
second = Slow()
optimizer = torch.optim.SGD([*model.parameters(), *second.parameters()], lr=0.01)
loss_fn = nn.BCEWithLogitsLoss()
for epoch in (1, 2, 3):
    for step, (x, y) in enumerate(loader):
        out = model(x)
        if epoch >= 2:
            out = out + second(x)  # another outermost module, called only from epoch 2 on
        loss = loss_fn(out, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 1:
            print(f"epoch {epoch}: global forward hooks {len(nn_module._global_forward_pre_hooks)}")
    print(f"epoch {epoch}: {step + 1} batches")
"""


@pytest.mark.slow  # a real script run: seconds each; the default suite keeps one such run
def test_forward_hooks_move_to_the_outermost_modules_and_relearn_each_epoch(tmp_path, capsys):
    """After one step with a hook on every module (torch's slow call path for each of them),
    the forward hooks sit on the outermost modules alone from the pass's second batch on;
    each epoch's first step learns them again, so a module first called in epoch 2 has its
    forward timed from then on."""
    stdout, out = attached_script(tmp_path, capsys, SECOND_MODEL_FROM_EPOCH_2)
    run = read_run(out)
    assert script_counts(stdout) == {1: 6, 2: 6, 3: 6} == record_counts(run)
    assert re.findall(r"global forward hooks (\d+)", stdout) == ["0", "0", "0"]  # narrowed from the 2nd batch on
    later = run.batches[run.batches["epoch"] >= 2]
    assert (later["forward"] >= 0.02).all()  # every batch of epochs 2-3 timed the slow module's forward
    assert (later["other"] < 0.02).all()


PAUSED_BATCHES = """
import torch
from torch.nn.modules import module as nn_module
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from dcnprobe.attach import active

BARE = {2, 4}  # the batches run with measuring switched off (0-based, each epoch)
torch.manual_seed(0)
loader = DataLoader(TensorDataset(torch.randn(48, 4), torch.rand(48, 1)), batch_size=8)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
agent = active.current()
for epoch in (1, 2):
    measured = 0
    for step, (x, y) in enumerate(loader):
        hooked = hasattr(torch.autograd.backward, "__wrapped__") or bool(nn_module._global_forward_pre_hooks) \\
            or bool(model._forward_pre_hooks)
        print(f"epoch {epoch} step {step}: {'hooked' if hooked else 'bare'}")
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        measured += step not in BARE
        if step + 1 in BARE:
            agent.pause()
        else:
            agent.resume()
    print(f"epoch {epoch}: {measured} batches")
"""


@pytest.mark.slow  # a real script run: seconds each; the default suite keeps one such run
def test_paused_batches_run_bare_and_are_not_recorded(tmp_path, capsys):
    """The overhead benchmark's switch: a paused batch runs with no hook of the agent's in
    place and is left out of the record; the batch before it is recorded at the pause, and
    epochs end as usual."""
    stdout, out = attached_script(tmp_path, capsys, PAUSED_BATCHES)
    run = read_run(out)
    assert script_counts(stdout) == {1: 4, 2: 4} == record_counts(run)
    assert read_run(out, extra_fields=True).batches["loader_batches"].tolist() == [1] * 8
    states = re.findall(r"step (\d): (hooked|bare)", stdout)
    assert [state for step, state in states if int(step) in (2, 4)] == ["bare"] * 4
    assert [state for step, state in states if int(step) not in (2, 4)] == ["hooked"] * 8
    assert (run.batches["forward"] > 0).all() and (run.batches["backward"] > 0).all()


@pytest.mark.slow  # a real script run per mode; test_per_sample_loop... is the default suite's attach run
@pytest.mark.parametrize("mode", ["no_grad", "eval-mode"])
def test_validation_passes_are_not_epochs(tmp_path, capsys, mode):
    out = tmp_path / "run"
    extra = ["--eval-only-mode"] if mode == "eval-mode" else []
    code, stdout, _ = dcnprobe_run(capsys, "--out", str(out), *QUIET, "--", sys.executable,
                                   str(EXAMPLES / "validate_each_epoch.py"), "--rows", "256", "--val-rows", "512",
                                   "--epochs", "2", *extra)
    assert code == 0
    run = read_run(out)
    assert script_counts(stdout) == {1: 4, 2: 4} == record_counts(run)
    assert run.epochs["epoch"].tolist() == [1, 2]
    validation = read_notes(out)["validation"]
    assert [(v["epoch"], v["batches"], v["why"]) for v in validation] == [(1, 2, mode), (2, 2, mode)]


@pytest.mark.slow  # a real script run: seconds each; the default suite keeps one such run
def test_no_dataloader_loop_gets_epochs_every_n_steps(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = dcnprobe_run(capsys, "--out", str(out), *QUIET, "--epoch-every", "8", "--cache-clear",
                                   "every:4", "--max-batches", "5", "--",
                                   sys.executable, str(EXAMPLES / "no_dataloader.py"), "--rows", "512",
                                   "--epochs", "3")
    assert code == 0
    run = read_run(out)
    assert script_counts(stdout) == {1: 8, 2: 8, 3: 8} == record_counts(run)
    assert run.header["boundaries"] == {"batch": "optimizer-step", "epoch": "epoch-every",
                                        "forward": "outermost-module-hooks"}
    assert (run.batches["data_wait"] == 0).all() and (run.batches["forward"] > 0).all()
    assert (run.batches["cache_clear"] > 0).sum() == 6  # every 4th of 24 steps
    # No DataLoader pass to cut short: said, not ignored.
    assert list(read_notes(out)["final"]["not_applied"]) == ["max_batches"]


@pytest.mark.slow  # a real script run: seconds each; the default suite keeps one such run
def test_no_dataloader_loop_with_mark_epoch(tmp_path, capsys):
    stdout, out = attached_script(tmp_path, capsys, MARK_EPOCH, "--num-workers", "2")
    run = read_run(out)
    assert script_counts(stdout) == {1: 5, 2: 5, 3: 5} == record_counts(run)
    assert run.header["boundaries"]["epoch"] == "mark_epoch"
    assert read_notes(out)["final"]["not_applied"] == {"num_workers": "the script built no DataLoader"}


@pytest.mark.slow  # a real script run: seconds each; the default suite keeps one such run
def test_a_script_using_the_probe_api_is_not_counted_twice(tmp_path, capsys):
    _, out = attached_script(tmp_path, capsys, PROBE_API, "--max-batches", "3")
    run = read_run(out)
    assert record_counts(run) == {1: 3, 2: 3}  # 4 batches a pass, cut at 3 by Probe.loader
    assert run.header["boundaries"] == {"batch": "api", "epoch": "api"}
    assert read_notes(out)["final"]["applied"] == {"threads": 1}  # the attach still applied settings
    assert not (out / "attach-run.jsonl").exists()
    headers = [json.loads(line) for line in (out / "run.jsonl").read_text().splitlines() if '"header"' in line]
    assert len(headers) == 1


@pytest.mark.slow  # a real script run: seconds each; the default suite keeps one such run
def test_a_nested_python_that_trains_does_not_record(tmp_path, capsys):
    nested = f"NESTED = {str(EXAMPLES / 'no_dataloader.py')!r}\n" + STARTS_A_NESTED_TRAINER
    stdout, out = attached_script(tmp_path, capsys, nested)
    assert "epoch 1: 4 batches" in stdout  # the nested trainer ran (256 rows / 64)
    run = read_run(out)
    assert record_counts(run) == {1: 4, 2: 4}  # the wrapper's own loop only
    assert len(list(out.glob(".attach-*.claim"))) == 1


def test_sitecustomize_chain_loads_the_one_it_shadows_and_costs_nothing_unset(tmp_path):
    import subprocess

    from dcnprobe.contract import ENV, AttachConfig, launch_env

    theirs = tmp_path / "their_site"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text("print('their sitecustomize ran')\n")
    probe = "import sys; print('dcnprobe loaded' if 'dcnprobe.attach.bootstrap' in sys.modules else 'dcnprobe not loaded')"
    attached = launch_env(AttachConfig(run_dir=str(tmp_path / "run")), {"PYTHONPATH": str(theirs)})
    unset = {k: v for k, v in attached.items() if k != ENV}
    for env, expected in ((attached, "dcnprobe loaded"), (unset, "dcnprobe not loaded")):
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
        assert done.stdout.splitlines() == ["their sitecustomize ran", expected]
    assert not (tmp_path / "run").exists()  # nothing trained, nothing claimed or written


def test_multiprocessing_helpers_are_recognised():
    from dcnprobe.attach.bootstrap import is_multiprocessing_helper

    assert is_multiprocessing_helper(["python", "-c", "from multiprocessing.spawn import spawn_main; spawn_main()",
                                      "--multiprocessing-fork"])
    assert is_multiprocessing_helper(["python", "-c", "from multiprocessing.forkserver import main; main(3)"])
    assert not is_multiprocessing_helper(["python", "train.py", "--workers", "4"])


def test_a_combination_the_dataloader_refuses_is_reported_not_crashed_into():
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from dcnprobe.attach.overrides import Overrides, bind_loader_arguments

    overrides = Overrides({"persistent_workers": "true", "prefetch_factor": "4", "device": "cpu"})
    dataset = TensorDataset(torch.zeros(8, 1))
    loader = DataLoader.__new__(DataLoader)
    bound = bind_loader_arguments(DataLoader.__init__, loader, (dataset,), {"batch_size": 4})  # num_workers=0
    overrides.rewrite_loader_arguments(bound.arguments)
    DataLoader.__init__(*bound.args, **bound.kwargs)  # accepted: the refused settings were left out
    overrides.loader_built(loader)
    summary = overrides.summary(loaders_seen=True)
    assert loader.persistent_workers is False and loader.prefetch_factor is None
    assert set(summary["not_applied"]) == {"persistent_workers", "prefetch_factor", "device"}
    assert "needs num_workers > 0" in summary["not_applied"]["persistent_workers"]
    assert summary["adjusted"] == ["persistent_workers=true not applied to DataLoader #1: it has num_workers=0",
                                   "prefetch_factor=4 not applied to DataLoader #1: it has num_workers=0"]
