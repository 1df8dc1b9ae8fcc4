"""One pass over a run record's bytes: where each complete line is, and whether it is a
batch, a background sample or anything else, found without parsing a line.

A record of a million batches is close to a gigabyte of JSON lines, nearly all of them
batch lines that a reader holding the writer's table (records.BATCH_TABLE) only counts.
The file is read in blocks into one buffer that is reused; a block's newlines are found
at once (numpy), and each line is told apart by the bytes the probe's writer starts it
with. What is held is a block and its line positions, however long the record; a line is
copied only when the reader asks for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dcnprobe.records import BATCH, MEMORY

BLOCK_BYTES = 1 << 23  # read at a time (8 MB): a few dozen blocks for a long run, a small buffer
OTHER, BATCH_LINE, SAMPLE_LINE = 0, 1, 2  # the kinds of line
# How the writer starts each kind (orjson, compact, `type` first). A line written otherwise
# (by hand, by another tool) is an OTHER line, which readers parse and judge.
BATCH_START = b'{"type":"' + BATCH.encode() + b'"'
SAMPLE_START = b'{"type":"' + MEMORY.encode() + b'"'
_NEWLINE = ord("\n")


@dataclass(frozen=True)
class Lines:
    """The complete lines of one block: line i is data[starts[i]:ends[i]] (without its
    newline), at file position offset + starts[i]. `data` is only valid until the scan
    reads its next block."""

    data: np.ndarray
    offset: int
    starts: np.ndarray
    ends: np.ndarray
    kinds: np.ndarray

    def line(self, i: int) -> bytes:
        return self.data[self.starts[i]:self.ends[i]].tobytes()


class LineScanner:
    """The complete lines of a file, a block at a time (`blocks()`); afterwards `tail` holds
    the bytes after the last newline: a last line with no newline after it (a process that
    died mid-write leaves one), or b""."""

    def __init__(self, path: str | Path, block_bytes: int = BLOCK_BYTES) -> None:
        self.path = Path(path)
        self.block_bytes = block_bytes
        self.tail = b""

    def blocks(self) -> Iterator[Lines]:
        buffer = np.empty(self.block_bytes, dtype=np.uint8)
        newline = np.empty(buffer.size, dtype=bool)
        # buffer[0] is always the newline before the first line still to be returned (at
        # the start, one imagined before the file), so that every line is found the same
        # way: as what follows a newline. `offset` is its file position.
        buffer[0] = _NEWLINE
        held, offset = 1, -1
        with open(self.path, "rb", buffering=0) as f:
            while True:
                if buffer.size - held < max(1, self.block_bytes // 2):  # a line as long as a block: room
                    buffer = np.concatenate([buffer[:held], np.empty(self.block_bytes, np.uint8)])
                    newline = np.empty(buffer.size, dtype=bool)
                read = f.readinto(memoryview(buffer)[held:])
                if not read:
                    break
                end = held + read
                np.equal(buffer[:end], _NEWLINE, out=newline[:end])
                found = np.flatnonzero(newline[:end])  # found[0] == 0: the newline kept in front
                if found.size > 1:
                    starts, ends = found[:-1] + 1, found[1:]
                    yield Lines(buffer[:end], offset, starts, ends, _kinds(buffer, starts))
                last = int(found[-1])
                buffer[:end - last] = buffer[last:end].copy()  # the unfinished line, behind its newline
                held, offset = end - last, offset + last
        self.tail = buffer[1:held].tobytes()


def _kinds(buffer: np.ndarray, starts: np.ndarray) -> np.ndarray:
    kinds = np.full(starts.size, OTHER, dtype=np.int8)
    kinds[_starting_with(buffer, starts, BATCH_START)] = BATCH_LINE
    kinds[_starting_with(buffer, starts, SAMPLE_START)] = SAMPLE_LINE
    return kinds


def _starting_with(buffer: np.ndarray, starts: np.ndarray, prefix: bytes) -> np.ndarray:
    """Which lines begin with `prefix`, narrowed a byte at a time. A line shorter than the
    prefix drops out at its newline (no prefix holds one), so nothing past a line's end is
    read."""
    candidates = np.arange(starts.size)
    for i, byte in enumerate(prefix):
        candidates = candidates[buffer[starts[candidates] + i] == byte]
    return candidates
