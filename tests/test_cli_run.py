"""`dcnprobe run -- CMD`: bad input is one line and exit code 2 before anything runs; a
script that fails on start is one line too; one that fails mid-run keeps its records and
passes its exit code on."""

import sys

import pytest
from attach_scripts import FAILS_IN_EPOCH_2

from dcnprobe.cli import main
from dcnprobe.runs import read_run


def dcnprobe_run(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def one_error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("dcnprobe: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("args, message", [
    ([], "the command after -- is empty"),
    (["--", "no-such-command-here"], "command not found: no-such-command-here"),
    (["--", sys.executable, "missing_script.py"], "no such script: missing_script.py"),
    (["--", sys.executable, "-c", "pass", "{speed}"], "placeholder {speed} in the command names no setting"),
    (["--num-workers", "0", "--persistent-workers", "--", sys.executable, "-c", "pass"],
     "persistent_workers=true needs num_workers > 0"),
    (["--num-workers", "lots", "--", sys.executable, "-c", "pass"], "expected an integer"),
    (["--device", "cpu", "--", sys.executable, "-c", "pass"], "--device cannot reach this command"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    if args and args[0] != "--" and "--out" not in args:
        args = ["--out", str(tmp_path / "run"), *args]
    code, _, err = dcnprobe_run(capsys, *args)
    assert code == 2
    assert message in one_error_line(err)


def test_an_existing_record_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "run.jsonl").write_text("{}\n")
    code, _, err = dcnprobe_run(capsys, "--out", str(tmp_path), "--", sys.executable, "-c", "pass")
    assert code == 2 and "already holds a run record" in one_error_line(err)


def test_a_script_that_fails_on_start_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = dcnprobe_run(capsys, "--out", str(out), "--", sys.executable, "-c",
                                     "import a_module_that_is_not_there")
    assert code == 2
    line = one_error_line(err)
    assert "exited with code 1 before training started" in line
    assert "ModuleNotFoundError: No module named 'a_module_that_is_not_there'" in line
    assert "Traceback" not in stdout and "Traceback" in (out / "output.log").read_text()


def test_placeholders_are_filled(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = dcnprobe_run(capsys, "--out", str(out), "--seed", "7", "--", sys.executable, "-c",
                                     "import sys; print('args', sys.argv[1:])", "{seed}", "{out}")
    assert code == 0
    assert f"args ['7', '{out}']" in stdout
    assert "no run record" in err  # it trained nothing, and says so


def test_a_script_failing_mid_run_keeps_its_records_and_exit_code(tmp_path, capsys):
    script = tmp_path / "fails.py"
    script.write_text(FAILS_IN_EPOCH_2)
    out = tmp_path / "run"
    code, stdout, _ = dcnprobe_run(capsys, "--out", str(out), "--threads", "1", "--", sys.executable, str(script))
    assert code == 1
    assert "RuntimeError: the loss went NaN" in stdout  # its output is shown once it trains
    run = read_run(out)
    assert run.status == "crashed"
    assert run.batches.groupby("epoch").size().to_dict() == {1: 4, 2: 3}
    assert "record:" in stdout and (out / "analysis.json").exists()
