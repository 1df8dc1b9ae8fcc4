"""Bad input: one clear line on stderr, exit code 2, no traceback."""

import pytest

from dcnprobe.cli import main


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err


def assert_one_line_error(code, err, expected):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dcnprobe: error:")
    assert expected in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--preset", "phase9"], "phase9"),
        (["--batch-size", "0"], "batch_size"),
        (["--batch-size", "-5"], "batch_size"),
        (["--persistent-workers"], "persistent_workers=true needs num_workers > 0"),
        (["--device", "cuda"], "device 'cuda' is not available"),
        (["--device", "tpu"], "expected auto, cpu, mps, cuda or cuda:N"),
        (["--cache-clear", "sometimes"], "never, epoch or every:N"),
        (["--prefetch-factor", "2"], "prefetch_factor needs num_workers > 0"),
        (["--no-such-option"], "no-such-option"),
        (["--data", "/nonexistent/day_0.tsv"], "data file not found"),
        (["--fault", "gremlins"], "gremlins"),
    ],
)
def test_bad_train_input(capsys, tmp_path, args, expected):
    code, err = run_cli(capsys, "train", "--out", str(tmp_path / "run"), *args)
    assert_one_line_error(code, err, expected)


def test_corrupt_and_misshapen_data_files(capsys, tmp_path):
    wrong = tmp_path / "three_columns.tsv"
    wrong.write_text("1\t2\t3\n")
    code, err = run_cli(capsys, "train", "--data", str(wrong), "--out", str(tmp_path / "a"))
    assert_one_line_error(code, err, "expected 40 tab-separated columns")

    corrupt = tmp_path / "binary.parquet"
    corrupt.write_bytes(b"\x00\x01garbage")
    code, err = run_cli(capsys, "train", "--data", str(corrupt), "--out", str(tmp_path / "b"))
    assert_one_line_error(code, err, "cannot read as parquet")


def test_resume_with_nothing_to_resume(capsys, tmp_path, tiny_data):
    code, err = run_cli(capsys, "train", "--data", tiny_data, "--resume", "--out", str(tmp_path / "empty"))
    assert_one_line_error(code, err, "nothing to resume")


def test_analyze_prints_a_verdict_and_writes_json(capsys, tmp_path):
    from synthetic_runs import write_run

    write_run(tmp_path, slowdown=1.5)
    from dcnprobe.cli import main

    main(["analyze", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.startswith("Slow: epoch 2 runs 1.")
    assert "forward" in out
    assert (tmp_path / "analysis.json").exists()


def test_analyze_a_directory_without_a_run(capsys, tmp_path):
    code, err = run_cli(capsys, "analyze", str(tmp_path))
    assert_one_line_error(code, err, "no run record")
