"""Readers for real click logs: Criteo TSV, and CSV or Parquet with a column spec.

Each reader turns a file into the same memory-mapped store the synthetic data uses:
categorical values become ids by frequency (id 0 for values unseen in the training
rows or missing), numeric values are standardised with training-row statistics
(Criteo's counts go through log1p first). Results are cached by file path, size, mtime
and spec, so a file is parsed once. Every problem with a file is a UsageError that
names the file and what is wrong with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from dcnprobe.model.data.store import Schema, StoreWriter, build_once, cache_key
from dcnprobe.model.data.table import CTRData, open_store

from dcnprobe import UsageError

READER_VERSION = 1
CRITEO_NUMERIC = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CATEGORICAL = tuple(f"C{i}" for i in range(1, 27))
CRITEO_COLUMNS = ("label", *CRITEO_NUMERIC, *CRITEO_CATEGORICAL)


@dataclass(frozen=True)
class FileSpec:
    path: str
    format: str  # criteo | csv | parquet
    label: str = "label"
    numeric: tuple[str, ...] = ()  # empty: infer (numeric dtypes other than the label)
    categorical: tuple[str, ...] = ()  # empty: infer (every other column)
    val_fraction: float = 0.1  # the last rows: logs are in time order
    min_count: int = 2  # rarer categorical values share the unseen id 0


def load_file(spec: FileSpec) -> CTRData:
    path = Path(spec.path)
    if not path.is_file():
        raise UsageError(f"data file not found: {spec.path}")
    stat = path.stat()
    key = cache_key("file", READER_VERSION, str(path.resolve()), stat.st_size, stat.st_mtime_ns, asdict(spec))
    return open_store(build_once(key, lambda root: _convert(spec, path, root)))


def _convert(spec: FileSpec, path: Path, root: Path) -> None:
    frame = _read_criteo(path) if spec.format == "criteo" else _read_tabular(path, spec)
    label, numeric_cols, categorical_cols = _columns(frame, spec)
    rows = len(frame)
    if rows < 2:
        raise UsageError(f"{path}: needs at least 2 rows, found {rows}")
    train_rows = max(1, min(rows - 1, round(rows * (1 - spec.val_fraction))))
    labels = _labels(frame[label], path)
    writer = StoreWriter(root, rows, len(numeric_cols), len(categorical_cols))
    for i, column in enumerate(numeric_cols):
        writer.numeric[:, i] = _standardise(frame[column], train_rows, log=spec.format == "criteo")
    vocab_sizes = []
    for i, column in enumerate(categorical_cols):
        ids, size = _encode(frame[column], train_rows, spec.min_count)
        writer.categorical[:, i] = ids
        vocab_sizes.append(size)
    writer.label[:] = labels
    schema = Schema(tuple(numeric_cols), tuple(categorical_cols), tuple(vocab_sizes))
    writer.close(schema, train_rows, source=f"{spec.format} file {path}")


def _read_criteo(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.ParserError as exc:
        raise UsageError(f"{path}: not a Criteo TSV file ({_first_line(exc)})") from None
    except (UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise UsageError(f"{path}: not a Criteo TSV file ({_first_line(exc)})") from None
    if frame.shape[1] != len(CRITEO_COLUMNS):
        raise UsageError(
            f"{path}: expected {len(CRITEO_COLUMNS)} tab-separated columns "
            f"(label, 13 integer, 26 categorical), found {frame.shape[1]}"
        )
    frame.columns = list(CRITEO_COLUMNS)
    for column in CRITEO_NUMERIC:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if bad.any():
            row = int(bad.idxmax()) + 1
            raise UsageError(f"{path}: line {row}: column {column} is not an integer: {frame[column][row - 1]!r}")
        frame[column] = values
    return frame


def _read_tabular(path: Path, spec: FileSpec) -> pd.DataFrame:
    try:
        if spec.format == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except ImportError:
        raise UsageError("reading Parquet needs pyarrow: pip install 'dcnprobe[parquet]'") from None
    except Exception as exc:  # pandas and pyarrow raise many types for a broken file
        raise UsageError(f"{path}: cannot read as {spec.format} ({_first_line(exc)})") from None


def _columns(frame: pd.DataFrame, spec: FileSpec) -> tuple[str, list[str], list[str]]:
    if spec.format == "criteo":
        return "label", list(CRITEO_NUMERIC), list(CRITEO_CATEGORICAL)
    missing = [c for c in (spec.label, *spec.numeric, *spec.categorical) if c not in frame.columns]
    if missing:
        raise UsageError(f"{spec.path}: no column(s) {', '.join(missing)} (has: {', '.join(map(str, frame.columns))})")
    rest = [c for c in frame.columns if c != spec.label]
    numeric = list(spec.numeric) or [c for c in rest if pd.api.types.is_numeric_dtype(frame[c]) and c not in spec.categorical]
    categorical = list(spec.categorical) or [c for c in rest if c not in numeric]
    if len(numeric) < 1 or len(categorical) < 1:
        raise UsageError(
            f"{spec.path}: need at least one numeric and one categorical column "
            f"(numeric: {numeric or 'none'}, categorical: {categorical or 'none'}); name them with ?numeric=..&categorical=.."
        )
    return spec.label, numeric, categorical


def _labels(column: pd.Series, path: Path) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce")
    if values.isna().any() or not values.isin([0, 1]).all():
        raise UsageError(f"{path}: the label column must hold only 0 and 1")
    return values.to_numpy(np.float32)


def _standardise(column: pd.Series, train_rows: int, log: bool) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
    if log:  # Criteo's integer features are heavy-tailed counts
        values = np.sign(values) * np.log1p(np.abs(values))
    train = values[:train_rows]
    mean = np.nanmean(train) if np.isfinite(train).any() else 0.0
    std = np.nanstd(train) if np.isfinite(train).any() else 1.0
    scaled = (values - mean) / (std if std > 0 else 1.0)
    return np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _encode(column: pd.Series, train_rows: int, min_count: int) -> tuple[np.ndarray, int]:
    """Ids 1..V-1 for values seen at least min_count times in training rows, else 0."""
    counts = column.iloc[:train_rows].value_counts(dropna=True)
    kept = counts[counts >= min_count].index
    mapping = pd.Series(np.arange(1, len(kept) + 1, dtype=np.int32), index=kept)
    ids = column.map(mapping).fillna(0).to_numpy(np.int32)
    return ids, len(kept) + 1


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
