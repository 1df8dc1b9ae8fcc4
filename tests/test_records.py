import json
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from dcnprobe.errors import UsageError
from dcnprobe.records import BATCH_ROW, BATCH_TABLE, SCHEMA_VERSION, RunWriter
from dcnprobe.runs import read_run


def write_run(tmp_path, batches=3, footer=True):
    writer = RunWriter(tmp_path)
    writer.write("header", {"schema": SCHEMA_VERSION, "settings": {"num_workers": 2}})
    for i in range(batches):
        writer.write("batch", {"epoch": 1, "batch": i, "total": 0.1 * (i + 1), "auc": float("nan")})
    writer.write("memory", {"t": 0.5, "main_rss": 100, "workers": [{"pid": 7, "rss": 10, "uss": 5}, {"pid": 8, "rss": 20, "uss": 6}]})
    if footer:
        writer.write("footer", {"status": "ok"})
    writer.close()
    return tmp_path / "run.jsonl"


def test_round_trip(tmp_path):
    write_run(tmp_path)
    run = read_run(tmp_path)
    assert run.status == "ok" and run.settings == {"num_workers": 2}
    assert run.batches["total"].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert "auc" not in run.batches  # a loop's own field: in the record, read with extra_fields
    assert read_run(tmp_path, extra_fields=True).batches["auc"].isna().all()  # NaN was written as null
    assert run.samples.loc[0, "workers_rss"] == 30 and run.samples.loc[0, "workers_uss"] == 11
    assert sorted(run.workers["pid"]) == [7, 8]


def test_file_is_strict_json(tmp_path):
    for line in write_run(tmp_path).read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}"))


def test_truncated_last_line_is_ignored(tmp_path):
    path = write_run(tmp_path, footer=False)
    with open(path, "a") as f:
        f.write('{"type":"batch","epoch":1,"batch":3,"to')  # killed mid-write
    run = read_run(tmp_path)
    assert run.truncated and run.status == "incomplete"
    assert len(run.batches) == 3


def test_damaged_lines_in_the_middle_cost_those_lines_only(tmp_path):
    path = write_run(tmp_path, batches=6)
    lines = path.read_text().splitlines()
    lines[2] = "{broken"  # not JSON
    lines[4] = '{"type":"batch","epoch":"one","total":0.5}'  # JSON, but not a batch record
    lines.insert(5, "\x00\x17garbage bytes from a disk error")
    path.write_text("\n".join(lines) + "\n")
    run = read_run(tmp_path)
    assert run.damaged == 3 and not run.truncated and run.status == "ok"
    assert run.batches["batch"].tolist() == [0, 2, 4, 5]


def test_a_record_that_is_mostly_damage_is_refused(tmp_path):
    path = write_run(tmp_path, batches=2)
    with open(path, "a") as f:
        f.write("garbage\n" * 10)
    with pytest.raises(UsageError, match="10 of 15 lines are damaged"):
        read_run(tmp_path)


def test_an_unreadable_header_is_refused(tmp_path):
    path = write_run(tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["{not a header"] + lines[1:]) + "\n")
    with pytest.raises(UsageError, match="first line is not a readable header"):
        read_run(tmp_path)


def test_background_samples_beyond_the_limit_are_thinned_evenly(tmp_path, monkeypatch):
    from dcnprobe import runs

    monkeypatch.setattr(runs, "MAX_SAMPLES", 10)
    writer = RunWriter(tmp_path)
    writer.write("header", {"schema": SCHEMA_VERSION})
    for i in range(35):
        writer.write("memory", {"t": float(i), "main_rss": i, "workers": [{"pid": 7, "rss": i}]})
    writer.close()
    run = read_run(tmp_path)
    assert run.samples_read == 35
    # 20 held at sample 19: every other one dropped, then every second sample read.
    assert run.samples["t"].tolist() == [float(t) for t in range(0, 35, 2)]
    assert run.workers["rss"].tolist() == run.samples["main_rss"].tolist()


def test_newer_schema_is_refused_clearly(tmp_path):
    writer = RunWriter(tmp_path)
    writer.write("header", {"schema": SCHEMA_VERSION + 1})
    writer.close()
    with pytest.raises(UsageError, match="upgrade dcnprobe"):
        read_run(tmp_path)


def test_not_a_run(tmp_path):
    with pytest.raises(UsageError, match="no run record"):
        read_run(tmp_path)
    (tmp_path / "run.jsonl").write_text('{"type":"batch"}\n')
    with pytest.raises(UsageError, match="not a readable header"):
        read_run(tmp_path)


# -- record types and fields ------------------------------------------------------------------

def test_every_record_type_has_a_constant_and_a_field_table():
    from dcnprobe import records

    assert set(records.COLUMNS) == set(records.RECORD_TYPES)
    assert records.LOOP_END == "loop_end" and "loop_end" in records.__doc__
    for kind in records.RECORD_TYPES:
        assert kind in records.__doc__


def test_probe_writes_only_documented_record_types(tmp_path):
    from dcnprobe.probe import Probe
    from dcnprobe.records import RECORD_TYPES

    with Probe(tmp_path) as probe:
        for _ in probe.loader(range(3)):
            probe.end_batch()
    kinds = {json.loads(line)["type"] for line in (tmp_path / "run.jsonl").read_text().splitlines()}
    assert kinds <= set(RECORD_TYPES)
    batch_fields = {k for line in (tmp_path / "run.jsonl").read_text().splitlines()
                    if (r := json.loads(line))["type"] == "batch" for k in r} - {"type"}
    from dcnprobe.records import BATCH, COLUMNS
    assert batch_fields <= set(COLUMNS[BATCH])


@pytest.mark.parametrize("line", ["42", "[1,2]", '"text"', "null", '{"no":"type"}', '{"type":"epoch"}'])
def test_a_line_that_is_not_a_record_is_skipped_and_counted(tmp_path, line):
    path = write_run(tmp_path)
    lines = path.read_text().splitlines()
    lines.insert(1, line)
    path.write_text("\n".join(lines) + "\n")
    run = read_run(tmp_path)
    assert run.damaged == 1 and len(run.batches) == 3


def test_a_first_line_that_is_not_a_header_is_a_usage_error(tmp_path):
    (tmp_path / "run.jsonl").write_text("42\n")
    with pytest.raises(UsageError, match="first line is not a readable header"):
        read_run(tmp_path)


def test_the_footer_is_written_once(tmp_path):
    writer = RunWriter(tmp_path)
    writer.write("header", {"schema": SCHEMA_VERSION})
    writer.write_footer("stalled", reason="no batch for 40 s")
    writer.write_footer("ok")  # the normal end, racing a stall: ignored
    writer.write("batch", {"epoch": 1})  # after the end: ignored
    run = read_run(tmp_path)
    assert run.status == "stalled" and run.footer["reason"] == "no batch for 40 s"
    assert len((tmp_path / "run.jsonl").read_text().splitlines()) == 2


# -- following a growing record ------------------------------------------------------------------

def test_follower_reads_pieces_and_waits_for_a_torn_line(tmp_path):
    from dcnprobe.records import RecordFollower

    path = tmp_path / "run.jsonl"
    follower = RecordFollower(tmp_path)  # a directory: its run.jsonl, not there yet
    assert follower.read() == [] and not follower.started
    path.write_bytes(b'{"type":"header","schema":1}\n{"type":"batch","ep')
    assert follower.read() == [{"type": "header", "schema": 1}]
    assert follower.torn and follower.started
    assert follower.read() == []  # nothing new yet
    with open(path, "ab") as f:
        f.write(b'och":1,"total":0.1}\n{"type":"batch","epoch":1,"total":0.2}\n')
    assert [r["total"] for r in follower.read()] == [0.1, 0.2]
    assert not follower.torn and follower.offset == path.stat().st_size


def test_follower_never_rereads_what_it_returned(tmp_path):
    from dcnprobe.records import RecordFollower

    path = tmp_path / "run.jsonl"
    path.write_bytes(b'{"type":"header","schema":1}\n{"type":"batch","epoch":1,"total":1}\n')
    follower = RecordFollower(path)
    assert len(follower.read()) == 2
    # Overwrite what was read with other bytes of the same length: a follower that
    # re-read the file would return them.
    size = path.stat().st_size
    path.write_bytes(b"x" * (size - 1) + b"\n" + b'{"type":"footer","status":"ok"}\n')
    assert follower.read() == [{"type": "footer", "status": "ok"}]


def test_follower_streams_a_big_record_in_chunks(tmp_path):
    from dcnprobe.records import RecordFollower

    path = tmp_path / "run.jsonl"
    path.write_text("".join(json.dumps({"type": "batch", "epoch": 1, "batch": i, "total": 0.1}) + "\n"
                            for i in range(1000)))
    follower = RecordFollower(path, chunk_bytes=4096)
    seen, looks = [], 0
    while True:
        seen += follower.read()
        looks += 1
        if follower.caught_up:
            break
    assert [r["batch"] for r in seen] == list(range(1000))
    assert looks == -(-path.stat().st_size // 4096)  # a chunk a look, and caught up at the end


def test_follower_skips_lines_that_are_not_records_and_restarts_on_a_new_file(tmp_path):
    from dcnprobe.records import RecordFollower

    path = tmp_path / "run.jsonl"
    path.write_text('{"type":"header","schema":1}\n42\n{broken\n{"type":"batch","epoch":1,"total":0.1}\n')
    follower = RecordFollower(path)
    assert [r["type"] for r in follower.read()] == ["header", "batch"] and follower.skipped == 2
    path.write_text('{"type":"header","schema":1,"new":true}\n')  # a new run in the same place
    assert follower.read() == [{"type": "header", "schema": 1, "new": True}]


def test_batches_come_from_the_writer_s_table_only_where_it_agrees_with_the_record(tmp_path):
    from dcnprobe.records import BATCH_TABLE

    write_run(tmp_path, batches=5, footer=False)
    assert (tmp_path / BATCH_TABLE).stat().st_size > 0
    from_table = read_run(tmp_path).batches
    from_lines = read_run(tmp_path, extra_fields=True).batches
    assert from_table["total"].tolist() == pytest.approx(from_lines["total"].tolist())
    assert from_table["epoch"].dtype.kind == "i" and from_table["total"].dtype.name == "float32"
    # A table that disagrees with the record (one row short, as if the writer died between
    # the line and the row) is not used: the batches come from the lines.
    table = (tmp_path / BATCH_TABLE).read_bytes()
    (tmp_path / BATCH_TABLE).write_bytes(table[: len(table) * 4 // 5])
    assert len(read_run(tmp_path).batches) == 5
    # ... nor is one whose rows are not what the writer wrote.
    (tmp_path / BATCH_TABLE).write_bytes(b"\xff" * len(table))
    assert read_run(tmp_path).batches["total"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_a_batch_line_torn_by_a_crash_is_not_counted_against_the_table(tmp_path, monkeypatch):
    from dcnprobe import batch_columns

    path = write_run(tmp_path, batches=4, footer=False)
    with open(path, "a") as f:
        f.write('{"type":"batch","epoch":1,"batch":4,"to')  # killed mid-write: no row either
    used = []
    monkeypatch.setattr(batch_columns, "batch_frame",
                        lambda columns, real=batch_columns.batch_frame: used.append(1) or real(columns))
    run = read_run(tmp_path)
    assert run.truncated and len(run.batches) == 4 and used == [1]  # one frame: the table's


def test_batch_lines_wait_for_the_next_flush_and_other_records_flush_at_once(tmp_path):
    """A flush per batch was a write system call per batch: batches wait (at most
    flush_every_s on the writer's clock), anything else flushes them with it."""
    now = [0.0]
    writer = RunWriter(tmp_path, flush_every_s=0.5, clock=lambda: now[0])
    writer.write("header", {"schema": SCHEMA_VERSION})
    path = tmp_path / "run.jsonl"

    def on_disk():
        return [json.loads(line)["type"] for line in path.read_bytes().splitlines()]

    for i in range(3):
        now[0] += 0.1
        writer.write("batch", {"epoch": 1, "batch": i, "total": 0.1})
    table = tmp_path / BATCH_TABLE
    assert on_disk() == ["header"] and (not table.exists() or not table.stat().st_size)
    now[0] += 0.25  # 0.55 s since the last flush: this batch takes all four out
    writer.write("batch", {"epoch": 1, "batch": 3, "total": 0.1})
    assert on_disk() == ["header"] + ["batch"] * 4
    assert (tmp_path / BATCH_TABLE).stat().st_size == 4 * BATCH_ROW.size
    writer.write("batch", {"epoch": 1, "batch": 4, "total": 0.1})
    writer.write("memory", {"t": 1.0})  # the sampler's records flush every half second
    assert on_disk()[-2:] == ["batch", "memory"]
    writer.close()


def test_a_run_killed_by_sigkill_is_readable_up_to_its_last_flush(tmp_path):
    """A real process killed mid-run: what it flushed reads back whole, batches agree with
    the table or the lines are used, and nothing after the last flush is invented."""
    script = textwrap.dedent(f"""
        import sys, time
        from dcnprobe.records import RunWriter, SCHEMA_VERSION
        w = RunWriter({str(tmp_path)!r}, flush_every_s=0.05)
        w.write("header", {{"schema": SCHEMA_VERSION}})
        i = 0
        while True:
            w.write("batch", {{"epoch": 1, "batch": i, "total": 0.001}})
            if i == 200:
                print("flushed", flush=True)
            i += 1
            time.sleep(0.001)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "flushed"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    run = read_run(tmp_path)
    batches = run.batches["batch"].tolist()
    assert len(batches) >= 150 and batches == list(range(len(batches)))  # in order, none lost before the flush
    assert run.status is None or run.status != "ok"


def test_batches_written_while_another_thread_flushes_are_all_kept_in_order(tmp_path):
    """Batch records wait unencoded and are written by whichever thread flushes (mostly the
    sampler's): none may be lost or reordered when both threads write at once."""
    writer = RunWriter(tmp_path, flush_every_s=0.001)
    writer.write("header", {"schema": SCHEMA_VERSION})
    done = threading.Event()

    def sampler():
        while not done.is_set():
            writer.write("memory", {"t": 0.0})

    thread = threading.Thread(target=sampler)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads change hands between any two bytecodes, not every 5 ms
    thread.start()
    try:
        for i in range(20000):
            writer.write("batch", {"epoch": 1, "batch": i, "total": 0.001})
    finally:
        done.set()
        thread.join()
        sys.setswitchinterval(switch_interval)
    writer.close()
    lines = [json.loads(line) for line in (tmp_path / "run.jsonl").read_bytes().splitlines()]
    assert [r["batch"] for r in lines if r["type"] == "batch"] == list(range(20000))
    assert sum(r["type"] == "memory" for r in lines) > 0
    assert (tmp_path / BATCH_TABLE).stat().st_size == 20000 * BATCH_ROW.size


def test_a_batch_row_holds_nan_wherever_a_field_is_absent_or_not_a_finite_number():
    """Plain rows are packed as they are; anything else (None, a bool, a string, an
    infinity, a numpy number) is sorted out value by value: NaN unless a finite real."""
    import math
    import struct

    import numpy as np

    from dcnprobe.records import BATCH_COLUMNS, batch_row

    plain = {name: float(i) for i, name in enumerate(BATCH_COLUMNS)}
    plain["epoch"], plain["batch"] = 2, 7
    odd = {"rss": None, "in_use": True, "py_blocks": "many", "gc_s": math.inf, "minflt": -math.inf,
           "forward": np.float32(0.5), "gc_gen2": np.int64(3), "majflt": math.nan}
    for record in (plain, {**plain, **odd}, {k: v for k, v in plain.items() if k not in ("rss", "collective")}):
        row = struct.unpack(f"<{len(BATCH_COLUMNS)}d", batch_row(record))
        for name, value in zip(BATCH_COLUMNS, row):
            given = record.get(name)
            number = (isinstance(given, (int, float, np.number)) and not isinstance(given, bool)
                      and math.isfinite(given))
            assert math.isnan(value) if not number else value == float(given), (name, given, value)
