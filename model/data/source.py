"""`--data` text -> a loaded data set.

    synthetic                          the embedded default (2.1 M training rows)
    synthetic:hard                     weaker signal, AUC near the report's ~0.58
    synthetic:train_rows=100000,...    any SyntheticSpec field
    PATH.tsv | PATH.txt                Criteo: label, 13 integer, 26 categorical columns
    PATH.csv | PATH.parquet[?label=click&numeric=a,b&categorical=c,d&val_fraction=0.1]
"""

from __future__ import annotations

from urllib.parse import parse_qs

from dcnprobe.model.data.readers import FileSpec, load_file
from dcnprobe.model.data.synthetic import load_synthetic, parse_synthetic
from dcnprobe.model.data.table import CTRData

from dcnprobe import UsageError

DEFAULT_DATA = "synthetic"
_FORMATS = {".tsv": "criteo", ".txt": "criteo", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def load_data(text: str = DEFAULT_DATA) -> CTRData:
    if text == "synthetic" or text.startswith("synthetic:"):
        try:
            spec = parse_synthetic(text)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"--data {text}: {exc}") from None
        return load_synthetic(spec)
    return load_file(parse_file_spec(text))


def parse_file_spec(text: str) -> FileSpec:
    path, _, query = text.partition("?")
    suffix = path[path.rfind(".") :].lower() if "." in path else ""
    if suffix not in _FORMATS:
        raise UsageError(f"--data {text}: unknown file type '{suffix or path}' (use .tsv/.txt, .csv or .parquet, or 'synthetic')")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(options) - {"label", "numeric", "categorical", "val_fraction", "min_count"}
    if unknown:
        raise UsageError(f"--data {text}: unknown option(s) {', '.join(sorted(unknown))}")
    try:
        return FileSpec(
            path=path,
            format=_FORMATS[suffix],
            label=options.get("label", "label"),
            numeric=tuple(filter(None, options.get("numeric", "").split(","))),
            categorical=tuple(filter(None, options.get("categorical", "").split(","))),
            val_fraction=float(options.get("val_fraction", 0.1)),
            min_count=int(options.get("min_count", 2)),
        )
    except ValueError as exc:
        raise UsageError(f"--data {text}: {exc}") from None
