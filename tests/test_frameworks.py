"""The loops people run, recorded exactly: every program in tests/programs/ counts its own
epochs, batches, optimizer steps and validation passes and writes them to truth.json;
each test runs one under `dcnprobe run` (the attach, or the framework callbacks) and
compares the record with what the program saw. No count is typed into a test.

`pytest -m frameworks` (deselected by default: importing Lightning or transformers
costs seconds). Programs that need a package skip cleanly without it:
`pip install -c constraints.txt -e '.[frameworks]'`.
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dcnprobe.attach.notes import loop_shape, read_notes
from dcnprobe.cli import main

pytestmark = pytest.mark.frameworks

PROGRAMS = Path(__file__).resolve().parent / "programs"
# One intra-op thread and frequent samples: a shared 2-core machine stays responsive, and
# short epochs still get memory and outside-load samples.
QUIET = ["--threads", "1", "--sample-interval", "0.1"]
LIGHTNING = ("pytorch_lightning",)
TRAINER = ("transformers", "accelerate")


@dataclass(frozen=True)
class Program:
    script: str
    args: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return " ".join([self.script.removesuffix(".py"), *self.args])


# Each a loop shape of issue 21, run as a user would; several shapes share a run where a
# framework combines them.
SHAPES = [
    Program("lightning_fit.py", (), LIGHTNING),  # sanity check, validation each epoch, max_epochs ends the fit
    Program("lightning_fit.py", ("--limit-train-batches", "25", "--val-check-interval", "0.5", "--accumulate", "4"),
            LIGHTNING),
    Program("lightning_fit.py", ("--two-optimizers", "--epochs", "2"), LIGHTNING),  # manual optimization
    Program("hf_trainer.py", (), TRAINER),  # eval_strategy="epoch"
    # eval_strategy="steps", gradient accumulation, DataLoaderShard over 2 workers, AcceleratedOptimizer
    Program("hf_trainer.py", ("--eval-strategy", "steps", "--accumulate", "4", "--batches", "62", "--workers", "2"),
            TRAINER),
    Program("accelerate_loop.py", (), ("accelerate",)),
    *(Program("plain_loops.py", ("--shape", shape)) for shape in
      ("accumulate", "amp-skip", "lbfgs", "eval-mode", "iterable", "new-loader", "val-inside")),
]
CALLBACKS = [
    Program("lightning_fit.py", ("--dcnprobe-callback", "--limit-train-batches", "25", "--val-check-interval", "0.5",
                                 "--accumulate", "4"), LIGHTNING),
    Program("lightning_fit.py", ("--dcnprobe-callback", "--two-optimizers", "--epochs", "2"), LIGHTNING),
    Program("hf_trainer.py", ("--dcnprobe-callback", "--eval-strategy", "steps", "--accumulate", "4", "--batches", "62"),
            TRAINER),
]


def run_program(tmp_path: Path, capsys, program: Program, *options: str) -> tuple[Path, str]:
    """`dcnprobe run OPTIONS -- python PROGRAM ARGS` in tmp_path/run; returns (run dir, stdout)."""
    for module in program.needs:
        pytest.importorskip(module)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--out", str(out), *QUIET, *options, "--", sys.executable, str(PROGRAMS / program.script),
              *program.args, "--truth", str(out / "truth.json")])
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.out[-3000:] + captured.err[-3000:]
    return out, captured.out


def program_counts(out: Path) -> dict:
    """What the program saw, in loop_shape's terms."""
    truth = json.loads((out / "truth.json").read_text())
    return {"epochs": [{k: e[k] for k in ("epoch", "batches", "steps")} for e in truth["epochs"]],
            "validations": truth["validations"]}


@pytest.mark.parametrize("program", SHAPES, ids=lambda p: p.id)
def test_the_attach_records_the_programs_own_epochs_batches_steps_and_validations(tmp_path, capsys, program):
    out, _ = run_program(tmp_path, capsys, program)
    assert loop_shape(out) == program_counts(out)
    notes = read_notes(out)
    assert notes["boundaries"]["epoch"] == "dataloader-pass" and notes["boundaries"]["batch"] == "optimizer-step"
    trained_in_eval = [g for g in notes["final"]["guesses"] if "eval mode" in g]
    assert bool(trained_in_eval) == ("eval-mode" in program.args)  # said exactly when it happened
    assert [p["epoch"] for p in notes["passes"]] == [e["epoch"] for e in program_counts(out)["epochs"]]


@pytest.mark.parametrize("program", CALLBACKS, ids=lambda p: p.id)
def test_the_framework_callbacks_record_the_programs_own_counts(tmp_path, capsys, program):
    out, _ = run_program(tmp_path, capsys, program)
    assert loop_shape(out) == program_counts(out)
    header = read_notes(out)["boundaries"]
    framework = "lightning" if "lightning" in program.script else "transformers"
    assert header["epoch"].startswith(framework + ":")  # the callback recorded, the attach stood down
    assert not (out / "attach-run.jsonl").exists()


# Slowdowns planted in framework code (each program's --fault), with the cause and the
# phase the analysis must name. The program's own clock must see the slowdown too.
PLANTED = [
    (Program("lightning_fit.py", ("--fault", "step-outputs", "--batches", "100", "--batch-size", "64"), LIGHTNING),
     "metric-accumulation", "other"),
    (Program("hf_trainer.py", ("--fault", "callback-history", "--batches", "100"), TRAINER),
     "metric-accumulation", "other"),
    (Program("lightning_fit.py", ("--fault", "worker-history", "--workers", "2", "--persistent-workers",
                                  "--batches", "100"), LIGHTNING),
     "worker-memory-growth", "data_wait"),
    (Program("hf_trainer.py", ("--fault", "worker-history", "--workers", "2", "--persistent-workers",
                               "--batches", "100"), TRAINER),
     "worker-memory-growth", "data_wait"),
]


def own_ratio(out: Path, epoch: int) -> float:
    """The program's own median batch (or step) time, epoch `epoch` over epoch 1."""
    epochs = json.loads((out / "truth.json").read_text())["epochs"]
    key = "median_batch_s" if "median_batch_s" in epochs[0] else "median_step_s"
    return epochs[epoch - 1][key] / epochs[0][key]


@pytest.mark.parametrize(("program", "cause", "phase"), PLANTED, ids=lambda x: x.id if isinstance(x, Program) else "")
def test_slowdowns_planted_in_framework_code_are_found_with_their_cause(tmp_path, capsys, program, cause, phase):
    from dcnprobe.analysis import advice_for

    out, stdout = run_program(tmp_path, capsys, program)
    analysis = json.loads((out / "analysis.json").read_text())
    if analysis["contended"]:
        pytest.skip(f"the machine was busy (outside load {analysis['outside_load']}): the analysis rightly "
                    "does not judge these timings")
    compared = analysis["timing"]["compared_epoch"]
    assert own_ratio(out, compared) > analysis["threshold"]  # the plant works, by the program's own clock
    assert analysis["slowdown"], analysis["verdict"]
    assert analysis["grew"] == phase, analysis["verdict"]
    assert analysis["causes"][0]["id"] == cause, analysis["verdict"]
    assert analysis["causes"][0]["advice"] == advice_for(cause) and advice_for(cause)
    assert f"Most likely cause: {cause}" in stdout



def test_a_callback_records_on_its_own_without_a_launcher(tmp_path):
    """The Lightning callback in a plain `python train.py`: its own run directory, and the
    program's own counts in it."""
    import subprocess

    pytest.importorskip("pytorch_lightning")
    done = subprocess.run([sys.executable, str(PROGRAMS / "lightning_fit.py"), "--dcnprobe-callback", "--epochs", "2",
                           "--truth", str(tmp_path / "truth.json")], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "runs").glob("lightning-*")
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert loop_shape(run) == {"epochs": [{k: e[k] for k in ("epoch", "batches", "steps")} for e in truth["epochs"]],
                               "validations": truth["validations"]}


@pytest.mark.parametrize("callback", [False, True], ids=["attach", "callback"])
def test_a_lightning_ddp_strategy_is_recorded_per_rank(tmp_path, capsys, callback):
    """Lightning's DDP strategy on CPU starts a process per device: each rank records into
    RUN/rankN with its own counts (truth-rankN.json), by the attach or by the callback."""
    args = ("--devices", "2", "--epochs", "2", *(("--dcnprobe-callback",) if callback else ()))
    out, _ = run_program(tmp_path, capsys, Program("lightning_fit.py", args, LIGHTNING))
    from dcnprobe.distributed.layout import rank_dirs
    from dcnprobe.runs import read_run

    assert sorted(rank_dirs(out)) == [0, 1]
    for rank, directory in rank_dirs(out).items():
        truth = json.loads((out / f"truth-rank{rank}.json").read_text())
        assert loop_shape(directory) == {"epochs": [{k: e[k] for k in ("epoch", "batches", "steps")}
                                                    for e in truth["epochs"]], "validations": truth["validations"]}
        record = read_run(directory)
        assert (record.header["rank"], record.header["world_size"]) == (rank, 2)
        if not callback:  # the attach times DDP's gradient all-reduce; the callback leaves it in backward
            assert (record.batches["collective"] > 0).all()
