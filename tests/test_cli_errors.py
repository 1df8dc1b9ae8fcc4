"""Bad input, in every command: one clear line on stderr, exit code 2, no traceback.

The table is the contract (DESIGN.md: bad input gets one line and a non-zero exit, never a
traceback, and nothing already measured is lost). Every case fails in validation, before
any training or trial, so the table runs in-process and fast. The documented codes other
than 2 (4: bisect could not measure the bad side; 5: train --on-slowdown stop) need real
training and are at the end, marked slow.
"""

import json
import sys

import pytest

from dcnprobe.cli import main
from dcnprobe.cli.options import MIN_STALL_AFTER_S, MIN_TRIAL_BATCHES, MIN_TRIAL_EPOCHS

PY = sys.executable


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err


def assert_one_line_error(code, err, expected, expected_code=2):
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dcnprobe: error:")
    assert expected in lines[0]
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def fixed_places(tmp_path_factory):
    """Made once: {file} a plain file, {sub} a path under it, {record_*} run records that are
    not what they claim, {empty} a directory with no record, {others} one with other files."""
    from synthetic_runs import write_run

    root = tmp_path_factory.mktemp("places")
    a_file = root / "a_file"
    a_file.write_text("not a directory\n")
    records = {}
    for name, damage in (("headless", lambda lines: ["42", *lines[1:]]),
                         ("mostly_damage", lambda lines: lines[:3] + ["{garbage"] * len(lines))):
        run = root / f"record_{name}"  # one damaged line in the middle is forgiven; these are not
        write_run(run, batches=20)
        lines = (run / "run.jsonl").read_text().splitlines()
        (run / "run.jsonl").write_text("\n".join(damage(lines)) + "\n")
        records[name] = run
    newer = root / "record_newer"
    newer.mkdir()
    (newer / "run.jsonl").write_text(json.dumps({"type": "header", "schema": 99}) + "\n")
    records["newer"] = newer
    empty = root / "no_record"
    empty.mkdir()
    return {"file": str(a_file), "sub": str(a_file / "sub"), "empty": str(empty), "others": str(root),
            **{f"record_{k}": str(v) for k, v in records.items()}}


@pytest.fixture
def places(fixed_places, tmp_path, tiny_data):
    """What the table's arguments name: the fixed places, {out} a fresh directory, {data} the tests' tiny data."""
    return {**fixed_places, "out": str(tmp_path / "out"), "data": tiny_data}


# (command line, text the one line must hold); {name} is filled from `places`.
TABLE = [
    # train: settings, the job, the output directory, option limits
    (["train", "--out", "{out}", "--preset", "phase9"], "phase9"),
    (["train", "--out", "{out}", "--batch-size", "0"], "batch_size"),
    (["train", "--out", "{out}", "--batch-size", "-5"], "batch_size"),
    (["train", "--out", "{out}", "--persistent-workers"], "persistent_workers=true needs num_workers > 0"),
    (["train", "--out", "{out}", "--device", "cuda"], "device 'cuda' is not available"),
    (["train", "--out", "{out}", "--device", "tpu"], "expected auto, cpu, mps, cuda or cuda:N"),
    (["train", "--out", "{out}", "--cache-clear", "sometimes"], "never, epoch or every:N"),
    (["train", "--out", "{out}", "--prefetch-factor", "2"], "prefetch_factor needs num_workers > 0"),
    (["train", "--out", "{out}", "--start-method", "teleport"], "start_method"),
    (["train", "--out", "{out}", "--no-such-option"], "no-such-option"),
    (["train", "--out", "{out}", "--data", "/nonexistent/day_0.tsv"], "data file not found"),
    (["train", "--out", "{out}", "--data", "synthetic:colour=blue"], "colour"),
    (["train", "--out", "{out}", "--fault", "gremlins"], "gremlins"),
    (["train", "--out", "/proc/x"], "/proc/x cannot be created"),
    (["train", "--out", "{sub}"], "cannot be created ({file} is a file)"),
    (["train", "--out", "{file}"], "is a file, not a directory"),
    (["train", "--out", "{out}", "--epochs", "0"], "--epochs"),
    (["train", "--out", "{out}", "--max-batches", "0"], "--max-batches"),
    (["train", "--out", "{out}", "--stall-after", "0.5"], f"{MIN_STALL_AFTER_S}"),
    (["train", "--out", "{out}", "--sample-interval", "0"], "--sample-interval"),
    (["train", "--out", "{out}", "--on-slowdown", "explode"], "--on-slowdown"),
    (["train", "--out", "{out}", "--data", "{data}", "--resume"], "nothing to resume"),
    # run -- CMD
    (["run", "--out", "{out}"], "the command after -- is empty"),
    (["run", "--out", "{sub}", "--", PY, "-c", "pass"], "cannot be created"),
    (["run", "--out", "{out}", "--epochs", "0", "--", PY, "-c", "pass"], "--epochs"),
    (["run", "--out", "{out}", "--stall-after", "0.5", "--", PY, "-c", "pass"], "--stall-after"),
    (["run", "--out", "{out}", "--", "no-such-command-here"], "command not found: no-such-command-here"),
    (["run", "--out", "{out}", "--device", "cpu", "--", PY, "-c", "pass"], "--device cannot reach this command"),
    # analyze: records that are missing, corrupt or not records at all
    (["analyze", "{empty}"], "no run record"),
    (["analyze", "/no/such/run_dir"], "no run record at /no/such/run_dir"),
    (["analyze", "{record_headless}"], "its first line is not a readable header"),
    (["analyze", "{record_mostly_damage}"], "lines are damaged; too little of the record is readable"),
    (["analyze", "{record_newer}"], "upgrade dcnprobe"),
    (["analyze", "--threshold", "0.5", "{empty}"], "--threshold"),
    (["analyze", "--out", "{sub}", "--", PY, "-c", "pass"], "cannot be created"),
    # bisect: every check runs before the first trial
    (["bisect", "--out", "{out}", "--data", "missing.csv"], "data file not found: missing.csv"),
    (["bisect", "--out", "/proc/x"], "/proc/x cannot be created"),
    (["bisect", "--out", "{sub}"], "cannot be created"),
    (["bisect", "--out", "{out}", "--epochs", "1"], f"x>={MIN_TRIAL_EPOCHS}"),
    (["bisect", "--out", "{out}", "--max-batches", "5"], f"x>={MIN_TRIAL_BATCHES}"),
    (["bisect", "--out", "{out}", "--bad", "num_workers=lots"], "expected an integer"),
    (["bisect", "--out", "{out}", "--bad", "speed=fast"], "speed"),
    (["bisect", "--out", "{out}", "--good", "persistent_workers=true"], "persistent_workers=true needs num_workers > 0"),
    (["bisect", "--out", "{out}", "--ray"], "--ray: bisect runs one trial at a time"),
    (["bisect", "--out", "{out}", "--fault", "worker-stall", "--", PY, "-c", "pass"], "describe the built-in trainer"),
    (["bisect", "--out", "{out}", "--", "no-such-command-here"], "command not found"),
    # sweep
    (["sweep", "--out", "{out}"], "--vary"),
    (["sweep", "--out", "{out}", "--vary", "num_workers"], "num_workers"),
    (["sweep", "--out", "{out}", "--vary", "bogus=1,2"], "bogus"),
    (["sweep", "--out", "{sub}", "--vary", "num_workers=0,2"], "cannot be created"),
    (["sweep", "--out", "{out}", "--vary", "num_workers=0,2", "--trial-budget", "5"], "--trial-budget"),
    # profile-epoch
    (["profile-epoch", "0", "--out", "{out}"], "EPOCH"),
    (["profile-epoch", "--out", "{out}"], "EPOCH"),
    (["profile-epoch", "2", "--out", "{out}", "--tools", "gdb"], "choose from"),
    (["profile-epoch", "2", "--out", "/proc/x"], "/proc/x cannot be created"),
    (["profile-epoch", "2", "--out", "{out}", "--batch-size", "1024", "--", PY, "-c", "pass"],
     "cannot be given batch_size: add {{batch_size}} to it"),
    # watch
    (["watch", "{others}"], "is not a run directory (no run.jsonl in it)"),
    (["watch", "{empty}", "--interval", "0"], "--interval"),
    # export
    (["export", "{empty}"], "no run record at"),
    (["export", "{record_headless}"], "no header line"),
    (["export", "{record_mostly_damage}"], "lines are damaged; too little of the record is readable"),
    (["export", "{record_newer}"], "upgrade dcnprobe"),
    (["export", "{record_newer}", "--format", "perfetto"], "'perfetto' is not 'chrome'"),
    (["export", "{record_newer}", "--with-trace", "/no/such/trace.json"], "does not exist"),
    # study: checked before the first trial
    (["study", "--out", "{out}", "--presets", "phase9"], "phase9"),
    (["study", "--out", "{out}", "--seeds", "many"], "many"),
    (["study", "--out", "{out}", "--gap-range", "1"], "--gap-range expects LOW,HIGH"),
    (["study", "--out", "{out}", "--device", "tpu"], "expected auto, cpu, mps, cuda or cuda:N"),
    (["study", "--out", "{file}"], "is a file, not a directory"),
    (["study", "--out", "{out}", "--epochs", "0"], "--epochs"),
    # bench (its options are checked here; the benchmarks run in a child process)
    (["bench", "--profile", "huge"], "'huge' is not one of 'quick', 'full'"),
    (["bench", "--compare", "/no/such/results.json"], "does not exist"),
    (["bench", "--baseline", "{empty}"], "is a directory"),
    (["bench", "--speed", "fast"], "--speed"),
    # attach PID: checked before anything is written (a PID above any pid_max never exists)
    (["attach", "4206607"], "no process with PID 4206607"),
    (["attach", "0"], "0 is not in the range x>=1"),
    (["attach", "12", "--for", "soon"], "'soon' is not a duration"),
    (["attach", "12", "--for", "0.5s"], "shorter than 1 s"),
    (["attach", "12", "--out", "{sub}"], "cannot be created"),
    (["attach", "12", "--stall-after", "0.5"], "--stall-after"),
    # the group itself, and faults
    (["no-such-command"], "No such command 'no-such-command'"),
    (["faults", "--verbose"], "--verbose"),
]


@pytest.mark.parametrize(("args", "expected"), TABLE, ids=[" ".join(a[:2]) + f" #{i}" for i, (a, _) in enumerate(TABLE)])
def test_bad_input_is_one_line_and_exit_2(capsys, places, args, expected):
    code, err = run_cli(capsys, *(a.format(**places) for a in args))
    assert_one_line_error(code, err, expected.format(**places))


def test_the_table_covers_every_command():
    from dcnprobe.cli import cli

    covered = {args[0] for args, _ in TABLE}
    untested = set(cli.all_commands) - covered
    assert not untested, f"commands with no bad-input case: {untested}"
    assert len(TABLE) >= 30


def test_a_bad_out_leaves_nothing_behind(capsys, tmp_path):
    """Checking that --out can be made makes no directory of its own: a command refused for
    another reason leaves the file system as it was."""
    out = tmp_path / "a" / "b"
    code, err = run_cli(capsys, "train", "--out", str(out), "--preset", "phase9")
    assert_one_line_error(code, err, "phase9")
    assert not (tmp_path / "a").exists()


def test_corrupt_and_misshapen_data_files(capsys, tmp_path):
    wrong = tmp_path / "three_columns.tsv"
    wrong.write_text("1\t2\t3\n")
    code, err = run_cli(capsys, "train", "--data", str(wrong), "--out", str(tmp_path / "a"))
    assert_one_line_error(code, err, "expected 40 tab-separated columns")

    corrupt = tmp_path / "binary.parquet"
    corrupt.write_bytes(b"\x00\x01garbage")
    code, err = run_cli(capsys, "train", "--data", str(corrupt), "--out", str(tmp_path / "b"))
    assert_one_line_error(code, err, "cannot read as parquet")


def test_analyze_prints_a_verdict_and_writes_json(capsys, tmp_path):
    from synthetic_runs import write_run

    write_run(tmp_path, slowdown=1.5)
    main(["analyze", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.startswith("Slow: epoch 2")
    assert "forward" in out
    assert (tmp_path / "analysis.json").exists()


def test_bisect_max_batches_200_still_parses():
    """The contract `dcnprobe bisect --max-batches 200` (DESIGN.md) survives the one option set."""
    from dcnprobe.cli import cli

    ctx = cli.all_commands["bisect"].make_context("bisect", ["--max-batches", "200"])
    assert ctx.params["max_batches"] == 200 and ctx.params["epochs"] == MIN_TRIAL_EPOCHS


# The documented exit codes other than 2, which only a real run can reach.

@pytest.mark.slow
def test_bisect_whose_bad_side_times_out_exits_4(capsys, tmp_path):
    script = tmp_path / "trains_then_hangs.py"
    script.write_text(
        "import time, torch\n"
        "loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 4)), batch_size=4)\n"
        "model = torch.nn.Linear(4, 1); opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for (x,) in loader:\n"
        "    model(x).sum().backward(); opt.step(); opt.zero_grad()\n"
        "time.sleep(600)\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["bisect", "--out", str(tmp_path / "b"), "--trial-budget", "10", "--max-batches", "10",
              "--bad", "device=cpu", "--bad", "num_workers=0", "--bad", "persistent_workers=false",
              "--", PY, str(script)])
    captured = capsys.readouterr()
    assert exit_info.value.code == 4
    assert "Traceback" not in captured.err + captured.out
    assert (tmp_path / "b" / "bisect.json").exists()  # what was measured is kept


@pytest.mark.slow
def test_train_stopped_as_slow_exits_5(capsys, tmp_path, small_data):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(tmp_path / "t"), "--data", small_data, "--batch-size", "512", "--epochs", "3",
              "--threads", "1", "--fault", "unbounded-metric", "--on-slowdown", "stop", "--quiet", "--no-checkpoints"])
    captured = capsys.readouterr()
    assert exit_info.value.code == 5
    assert "Traceback" not in captured.err
