"""Per-rank attach on real processes: `dcnprobe run -- torchrun --nproc-per-node 2` (and a
script that spawns its own ranks) on gloo/CPU, with tests/programs/ddp_train.py, which
counts each rank's own epochs, batches and steps (truth-rankN.json) and plants faults on
one rank. Every count is compared with the program's; no count is typed into a test.

Slow (each run starts three Python processes that import torch): `pytest -m slow`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dcnprobe.attach.notes import loop_shape
from dcnprobe.distributed.analysis import analyze_ranks
from dcnprobe.distributed.layout import rank_dirs
from dcnprobe.distributed.reader import read_ranks
from dcnprobe.runs import read_run

pytestmark = pytest.mark.slow

PROGRAM = Path(__file__).resolve().parent / "programs" / "ddp_train.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def run(tmp_path: Path, launcher: list[str], *args: str, dcnprobe_args: tuple[str, ...] = ()) -> tuple[Path, str]:
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "dcnprobe", "run", "--sample-interval", "0.1", *dcnprobe_args,
                           "--out", str(out), "--", *launcher, str(PROGRAM), "--truth", str(out / "truth.json"),
                           *args], capture_output=True, text=True, env=env, timeout=300)
    return out, done.stdout + done.stderr


def truth(out: Path, rank: int) -> dict:
    return json.loads((out / f"truth-rank{rank}.json").read_text())


def counts(out: Path, rank: int) -> list[dict]:
    return [{k: e[k] for k in ("epoch", "batches", "steps")} for e in truth(out, rank)["epochs"]]


def test_every_rank_records_its_own_epochs_with_its_rank_and_collective_time(tmp_path):
    out, said = run(tmp_path, TORCHRUN, "--metric-allreduce")
    assert sorted(rank_dirs(out)) == [0, 1], said
    for rank, directory in rank_dirs(out).items():
        assert loop_shape(directory)["epochs"] == counts(out, rank)
        record = read_run(directory)
        assert (record.header["rank"], record.header["world_size"]) == (rank, 2)
        assert record.header["host"] and record.status == "ok"
        # Both DDP's all-reduce and the explicit metric all_reduce were timed.
        assert (record.batches["collective"] > 0).all()
    result = analyze_ranks(out)
    assert result.judgement.kind != "straggler", result.verdict


def test_a_rank_whose_workers_carry_growing_state_is_named_with_its_cause(tmp_path):
    out, said = run(tmp_path, TORCHRUN, "--leak-rank", "1", "--workers", "2", "--persistent-workers", "--batches", "80")
    result = analyze_ranks(out)
    own = [truth(out, r)["median_step_s"] for r in (0, 1)]
    assert own[1][-1] / own[1][0] > result.threshold  # the plant slows the program, by its own clock
    if any(a.signals.contention.contended for a in result.own.values()):
        pytest.skip("the machine was busy: the ranks' own analyses rightly do not judge")
    assert result.judgement.stragglers == [1], result.verdict
    healthy = result.judgement.changes[0]
    assert healthy.collective.significant and not healthy.compute.significant
    assert result.own[1].top_cause == "worker-memory-growth", result.verdict


def test_a_crashed_rank_is_named_and_every_rank_keeps_what_it_recorded(tmp_path):
    out, said = run(tmp_path, TORCHRUN, "--crash-rank", "1")
    ranks = read_ranks(out)
    assert ranks.status == "crashed" and ranks.stopped[0].rank == 1, said
    crashed_at = truth(out, 1)["crashed_at"]
    assert ranks.stopped[0].epoch == crashed_at["epoch"] and ranks.stopped[0].batch + 1 == crashed_at["batch"]
    assert analyze_ranks(out).verdict.startswith("Crashed: rank 1 crashed")


def test_a_hung_collective_stalls_with_the_stacks_of_every_rank(tmp_path):
    out, said = run(tmp_path, TORCHRUN, "--hang-rank", "1", dcnprobe_args=("--stall-after", "5"))
    ranks = read_ranks(out)
    assert ranks.status == "stalled", said
    first = ranks.stopped[0]
    stacks = list((out / f"rank{first.rank}" / "stacks").glob("stack-*.txt"))
    roles = {p.name.split("-")[1] for p in stacks}
    assert {"main", "job"} <= roles, stacks  # its own, and the other rank's, dumped before torchrun ended it
    texts = "".join(p.read_text() for p in stacks)
    assert "ddp_train.py" in texts


def test_ranks_a_script_spawns_itself_are_each_recorded(tmp_path):
    out, said = run(tmp_path, [sys.executable], "--spawn", "2", "--epochs", "2")
    assert sorted(rank_dirs(out)) == [0, 1], said
    for rank, directory in rank_dirs(out).items():
        assert loop_shape(directory)["epochs"] == counts(out, rank)
        assert read_run(directory).header["rank"] == rank


def test_profile_epoch_profiles_every_rank(tmp_path):
    out = tmp_path / "prof"
    done = subprocess.run([sys.executable, "-m", "dcnprobe", "profile-epoch", "2", "--tools", "pyspy", "--out", str(out),
                           "--", *TORCHRUN, str(PROGRAM), "--epochs", "2", "--truth", str(tmp_path / "truth.json")],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for rank in (0, 1):
        report = (out / f"rank{rank}" / "profile.md").read_text()
        assert "epoch 2 against epoch 1" in report
        assert "ddp_train.py" in (out / f"rank{rank}" / "profiles" / "epoch2-pyspy.collapsed.txt").read_text()


def test_killing_a_torchrun_trial_kills_every_rank(tmp_path):
    """torchrun starts each rank in a session of its own: killing the trial's process group
    alone would leave the ranks training on as orphans."""
    import time

    import psutil

    from dcnprobe.contract import AttachConfig
    from dcnprobe.distributed.layout import record_files
    from dcnprobe.harness import launch

    out = tmp_path / "run"
    marker = str(tmp_path / "truth.json")
    proc = launch.start([*TORCHRUN, str(PROGRAM), "--epochs", "50", "--truth", marker], AttachConfig(run_dir=str(out)))
    deadline = time.monotonic() + 120
    while len(record_files(out)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert len(record_files(out)) == 2, "the ranks never started training"

    def ranks_alive():
        return [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]

    assert len(ranks_alive()) >= 3  # torchrun and its two ranks
    launch.kill(proc)
    proc.wait()
    deadline = time.monotonic() + 10
    while ranks_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ranks_alive() == []
