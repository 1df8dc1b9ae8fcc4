"""read_run on records written by the probe's own writer: the writer's table and the lines
give the same batches (columns, types, values); a table and lines of different lengths (a
run killed between the two files' flushes) give what both hold, read once; a table that
is not the record's is not used; the size of the scan's blocks changes nothing; samples are
thinned by position and damaged lines are still skipped and counted."""

import math

import numpy as np
import pandas as pd
import pytest

from dcnprobe import runs
from dcnprobe.records import BATCH_ROW, BATCH_TABLE, SCHEMA_VERSION, RunWriter
from dcnprobe.runs import read_run

BATCHES = 40


def write_record(directory, batches=BATCHES, scale=1.0):
    """A record with the odd values a real one can hold: a count missing from one batch, a
    value written as null, numpy scalars, a loop's own field, samples with workers."""
    writer = RunWriter(directory)
    writer.write("header", {"schema": SCHEMA_VERSION, "environment": {"cpu_count": 2}})
    for step in range(batches):
        epoch, batch = 1 + step // 20, step % 20
        record = {"epoch": epoch, "batch": batch, "step": step, "t": 1e6 + 0.1 * step * scale,
                  "data_wait": 0.001, "forward": np.float32(0.04 * scale), "backward": 0.05 * scale,
                  "total": 0.1 * scale + 1e-4 * step, "rss": 500_000_000 + 4096 * step,
                  "in_use": None if step % 7 == 3 else 300_000_000, "gc_s": 0.0, "minflt": 10,
                  "rows": np.int64(4096), "loss": 0.5}
        if step != 11:
            record["gc_gen2"] = int(step % 5 == 0)
            record["majflt"] = step == 0 or 0  # True is not a count: NaN, in the table as from the line
        writer.write("batch", record)
        if step % 3 == 0:
            writer.write("memory", {"t": 0.1 * step, "epoch": epoch, "step": step, "main_rss": 600 + step,
                                    "workers": [{"pid": 7, "rss": 10 + step, "uss": 5}]})
        if batch == 19:
            writer.write("epoch", {"epoch": epoch, "batches": 20})
    writer.write_footer("ok")
    return directory


def lines_only(directory):
    (directory / BATCH_TABLE).unlink()
    return read_run(directory)


def same_run(a, b):
    for name in ("batches", "samples", "workers", "epochs"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True)
    assert (a.header, a.footer, a.damaged, a.truncated, a.samples_read, a.stalls, a.warnings, a.others) == (
        b.header, b.footer, b.damaged, b.truncated, b.samples_read, b.stalls, b.warnings, b.others)


def readings(monkeypatch):
    """The table rows each pass over the record was given (one pass: the table was used as it is)."""
    passes = []
    real = runs._Reading

    def counting(file, extra_fields, table_rows):
        passes.append(table_rows)
        return real(file, extra_fields, table_rows)

    monkeypatch.setattr(runs, "_Reading", counting)
    return passes


def test_the_table_and_the_lines_give_the_same_batches(tmp_path):
    table = read_run(write_record(tmp_path))
    batches = table.batches
    assert list(batches) == ["epoch", "batch", "step", "t", "data_wait", "forward", "backward", "total", "rss",
                             "in_use", "gc_s", "gc_gen2", "minflt", "majflt", "rows"]  # collective, ... never written
    dtypes = {name: str(dtype) for name, dtype in batches.dtypes.items()}
    assert dtypes["epoch"] == dtypes["rows"] == dtypes["minflt"] == "int32"  # complete counts
    assert dtypes["gc_gen2"] == dtypes["majflt"] == "float64"  # a count missing from one batch
    assert dtypes["t"] == "float64" and dtypes["total"] == dtypes["rss"] == dtypes["in_use"] == "float32"
    assert batches["t"].iloc[-1] == 1e6 + 0.1 * (BATCHES - 1)  # the clock keeps its microseconds
    assert batches["forward"].iloc[0] == np.float32(0.04)  # a numpy scalar, in the table as in the line
    assert batches["rows"].tolist() == [4096] * BATCHES
    assert math.isnan(batches["in_use"].iloc[3]) and math.isnan(batches["gc_gen2"].iloc[11])
    assert batches["gc_gen2"].iloc[10] == 1 and math.isnan(batches["majflt"].iloc[0])
    same_run(table, lines_only(tmp_path))


@pytest.mark.parametrize("table_cut, lines_cut", [(3, 0), (0, 4), (5, 2), (BATCHES, 0)])
def test_a_table_and_lines_of_different_lengths_give_what_both_hold_in_one_pass(tmp_path, monkeypatch,
                                                                              table_cut, lines_cut):
    """A run killed between the flushes of run.jsonl and batches.f64: one of them holds a few
    batches more. The table covers the batches both hold, the lines after it are parsed."""
    directory = write_record(tmp_path / "killed")
    table = directory / BATCH_TABLE
    table.write_bytes(table.read_bytes()[:(BATCHES - table_cut) * BATCH_ROW.size])
    lines = (directory / "run.jsonl").read_bytes().split(b"\n")
    batch_lines = [i for i, line in enumerate(lines) if line.startswith(b'{"type":"batch"')]
    dropped = set(batch_lines[len(batch_lines) - lines_cut:])
    (directory / "run.jsonl").write_bytes(b"\n".join(line for i, line in enumerate(lines) if i not in dropped))
    passes = readings(monkeypatch)
    run = read_run(directory)
    assert passes == [BATCHES - table_cut]
    assert run.batches["step"].tolist() == list(range(BATCHES - lines_cut))
    monkeypatch.undo()
    same_run(run, lines_only(directory))


def test_a_table_that_is_not_the_record_s_is_not_used(tmp_path, monkeypatch):
    """As many rows as the record has batch lines, but another run's: its rows do not agree
    with the lines, which decide."""
    ours, theirs = write_record(tmp_path / "ours"), write_record(tmp_path / "theirs", scale=2.0)
    (ours / BATCH_TABLE).write_bytes((theirs / BATCH_TABLE).read_bytes())
    passes = readings(monkeypatch)
    run = read_run(ours)
    assert passes == [BATCHES, 0]  # the table, found wanting, then the lines alone
    assert run.batches["backward"].tolist() == pytest.approx([0.05] * BATCHES)


def test_blocks_of_any_size_read_the_same_record(tmp_path, monkeypatch):
    """Damaged lines, blank lines, a torn last line and samples across block boundaries."""
    path = write_record(tmp_path) / "run.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[5] = b"{broken"
    lines.insert(9, b"")
    lines.insert(20, b"\x00\x17garbage")
    path.write_bytes(b"\n".join(lines[:-1]) + b'\n{"type":"memory","t":9')
    whole = read_run(tmp_path)
    assert whole.damaged == 2 and whole.truncated
    for block in (1, 50, 997):
        monkeypatch.setattr(runs, "READ_BYTES", block)
        same_run(read_run(tmp_path), whole)


def test_samples_are_thinned_by_their_place_and_damage_among_them_is_counted(tmp_path, monkeypatch):
    """23 samples, 4 kept whole: every 4th sample line is read (the smallest power of two
    that leaves fewer than 8), and a damaged one among those is damage, not a sample."""
    monkeypatch.setattr(runs, "MAX_SAMPLES", 4)
    writer = RunWriter(tmp_path)
    writer.write("header", {"schema": SCHEMA_VERSION})
    for i in range(23):
        writer.write("memory", {"t": float(i), "main_rss": i})
    writer.close()
    path = tmp_path / "run.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[1 + 8] = b'{"type":"memory","t":"eight"'  # the 9th sample line: kept, and damaged
    lines[1 + 9] = b'{"type":"memory"...'  # the 10th: not kept, so never read
    path.write_bytes(b"\n".join(lines))
    run = read_run(tmp_path)
    assert run.samples["t"].tolist() == [0.0, 4.0, 12.0, 16.0, 20.0]
    assert run.samples_read == 23 and run.damaged == 1
