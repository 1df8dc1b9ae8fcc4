"""The record scan: every complete line of a file, where it is and what kind, against a
plain split of the same bytes, for blocks of every size (a line longer than a block, a
line cut by a block's end, blank and binary lines, a last line with no newline)."""

import pytest

from dcnprobe.record_scan import (
    BATCH_LINE,
    BATCH_START,
    OTHER,
    SAMPLE_LINE,
    SAMPLE_START,
    LineScanner,
)

LINES = [
    b'{"type":"header","schema":1}',
    b'{"type":"batch","epoch":1,"total":0.1}',
    b'{"type":"memory","t":0.5,"workers":[{"pid":7}]}',
    b"",
    b"   ",
    b'{"type":"batches","epoch":1}',  # not a batch: the type's closing quote is part of the start
    b'{"type":"batc',
    b'{"type": "batch","epoch":1,"total":0.1}',  # written by hand: an other line, parsed and judged
    b"\x00\x17garbage",
    b'{"type":"batch","epoch":1,"total":0.2,"pad":"' + b"x" * 300 + b'"}',  # longer than small blocks
    b'{"type":"memory"',
    b'{"type":"epoch","epoch":1}',
    b"{",
]


def expected_kind(line):
    return BATCH_LINE if line.startswith(BATCH_START) else SAMPLE_LINE if line.startswith(SAMPLE_START) else OTHER


def scan(path, block_bytes):
    scanner = LineScanner(path, block_bytes)
    found = []
    for block in scanner.blocks():
        for i in range(block.starts.size):
            found.append((block.offset + int(block.starts[i]), block.line(i), int(block.kinds[i])))
    return found, scanner.tail


@pytest.mark.parametrize("block_bytes", [1, 2, 7, 16, 64, 333, 1 << 20])
@pytest.mark.parametrize("tail", [b"", b'{"type":"batch","epoch":1,"to'])
def test_every_line_where_it_is_and_its_kind_as_a_plain_split_finds_them(tmp_path, block_bytes, tail):
    data = b"\n".join(LINES * 3) + b"\n" + tail
    path = tmp_path / "run.jsonl"
    path.write_bytes(data)
    found, rest = scan(path, block_bytes)
    assert [line for _, line, _ in found] == LINES * 3
    assert [kind for _, _, kind in found] == [expected_kind(line) for line in LINES * 3]
    assert all(data[at:at + len(line)] == line for at, line, _ in found)  # file positions
    assert rest == tail


def test_an_empty_file_and_one_with_no_newline(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_bytes(b"")
    assert scan(path, 16) == ([], b"")
    path.write_bytes(b'{"type":"header"}')
    assert scan(path, 4) == ([], b'{"type":"header"}')
