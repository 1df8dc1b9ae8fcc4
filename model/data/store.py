"""Column arrays on disk: written once, atomically, then memory-mapped by every reader.

A store is a directory with `categorical.npy` (int32 ids, 0 = unseen), `numeric.npy`
(float32), `label.npy` (float32 0/1) and `meta.json` (schema and train/validation split).
Stores live in a cache keyed by what produced them, so the 2.1 M-row default data is
generated once per machine and later runs map it in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

STORE_VERSION = 1
ARRAYS = ("categorical", "numeric", "label")


@dataclass(frozen=True)
class Schema:
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    vocab_sizes: tuple[int, ...]  # per categorical field, counting id 0 (unseen or missing)


def cache_root() -> Path:
    base = os.environ.get("DCNPROBE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dcnprobe"
    )
    return Path(base)


def cache_key(*parts: object) -> str:
    text = json.dumps([STORE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class StoreWriter:
    """Preallocated memory-mapped arrays to fill in place, chunk by chunk."""

    def __init__(self, root: Path, rows: int, numeric: int, categorical: int) -> None:
        self.root = root
        open_map = np.lib.format.open_memmap
        self.categorical = open_map(root / "categorical.npy", "w+", np.int32, (rows, categorical))
        self.numeric = open_map(root / "numeric.npy", "w+", np.float32, (rows, numeric))
        self.label = open_map(root / "label.npy", "w+", np.float32, (rows,))

    def close(self, schema: Schema, train_rows: int, source: str) -> None:
        for array in (self.categorical, self.numeric, self.label):
            array.flush()
        meta = {"version": STORE_VERSION, "schema": asdict(schema), "train_rows": train_rows, "source": source}
        (self.root / "meta.json").write_text(json.dumps(meta, indent=1))


def build_once(key: str, build: Callable[[Path], None]) -> Path:
    """The store for `key`, building it with `build(tmp_dir)` if absent.

    The build writes into a private temporary directory that is renamed into place, so a
    reader never sees half a store and concurrent builders cannot corrupt each other.
    """
    root = cache_root() / "data" / key
    if (root / "meta.json").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        build(tmp)
        os.rename(tmp, root)
    except OSError:
        if not (root / "meta.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def read_meta(root: Path) -> dict:
    return json.loads((root / "meta.json").read_text())
