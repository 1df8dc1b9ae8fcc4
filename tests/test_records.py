import json

import pytest

from dcnprobe.errors import UsageError
from dcnprobe.records import SCHEMA_VERSION, RunWriter, read_run


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
    assert run.batches["auc"].isna().all()  # NaN was written as null
    assert run.memory.loc[0, "workers_rss"] == 30 and run.memory.loc[0, "workers_uss"] == 11
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


def test_corrupt_line_in_the_middle_is_an_error(tmp_path):
    path = write_run(tmp_path)
    lines = path.read_text().splitlines()
    lines[2] = "{broken"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match="line 3 is corrupt"):
        read_run(tmp_path)


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
    with pytest.raises(UsageError, match="no header"):
        read_run(tmp_path)
