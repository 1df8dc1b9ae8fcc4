import numpy as np
import pytest
from dcnprobe.model.data.source import load_data
from dcnprobe.model.data.synthetic import NAMED_SPECS, SyntheticSpec, _Truth, parse_synthetic
from dcnprobe.model.metrics import roc_auc

from dcnprobe.errors import UsageError

SMALL = "synthetic:train_rows=5000,val_rows=1000"


def test_generation_is_deterministic_by_seed(tmp_path, monkeypatch):
    a = load_data(SMALL)
    monkeypatch.setenv("DCNPROBE_CACHE", str(tmp_path))  # force a second, independent generation
    b = load_data(SMALL)
    c = load_data(SMALL + ",seed=1")
    assert a.train.root != b.train.root
    np.testing.assert_array_equal(a.train.categorical, b.train.categorical)
    np.testing.assert_array_equal(a.val.label, b.val.label)
    assert not np.array_equal(a.train.categorical, c.train.categorical)


def test_split_sizes_schema_and_positive_rate():
    data = load_data("synthetic:train_rows=40000,val_rows=10000,positive_rate=0.2")
    assert (len(data.train), len(data.val)) == (40000, 10000)
    assert data.train.categorical.shape == (40000, 16)
    assert data.train.numeric.shape == (40000, 8)
    assert data.train.categorical.max(axis=0).tolist() < list(data.schema.vocab_sizes)
    assert data.train.categorical.min() >= 1  # 0 is reserved for unseen values
    assert abs(float(data.train.label.mean()) - 0.2) < 0.01


def test_cached_store_is_reused_not_regenerated():
    first = load_data(SMALL)
    stamp = (first.train.root / "label.npy").stat().st_mtime_ns
    again = load_data(SMALL)
    assert again.train.root == first.train.root
    assert (again.train.root / "label.npy").stat().st_mtime_ns == stamp


def test_planted_signal_orders_default_above_hard():
    """The labelling model itself: default data is clearly learnable, 'hard' is near chance+."""
    aucs = {}
    for name in ("default", "hard"):
        spec = NAMED_SPECS[name]
        truth = _Truth(spec)
        truth.calibrate(spec)
        rng = np.random.default_rng(7)
        cat, num = truth.sample_features(rng, 50_000, spec.numeric_fields)
        z = truth.logit(cat, num)
        y = rng.random(z.size) < 1 / (1 + np.exp(-z))
        aucs[name] = roc_auc(z, y)
    assert aucs["default"] > 0.85
    assert 0.58 < aucs["hard"] < 0.68


def test_parse_synthetic_options():
    assert parse_synthetic("synthetic") == SyntheticSpec()
    assert parse_synthetic("synthetic:hard").signal == NAMED_SPECS["hard"].signal
    spec = parse_synthetic("synthetic:hard,train_rows=100")
    assert (spec.signal, spec.train_rows) == (NAMED_SPECS["hard"].signal, 100)
    with pytest.raises(UsageError, match="unknown synthetic option"):
        load_data("synthetic:colour=blue")


def _criteo_lines(rows, rng):
    lines = []
    for _ in range(rows):
        label = str(int(rng.random() < 0.3))
        ints = [str(int(rng.integers(0, 100))) if rng.random() > 0.1 else "" for _ in range(13)]
        cats = [f"{int(rng.integers(0, 5)):08x}" if rng.random() > 0.1 else "" for _ in range(26)]
        lines.append("\t".join([label, *ints, *cats]))
    return lines


def test_criteo_tsv_is_read_and_encoded(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "day.tsv"
    path.write_text("\n".join(_criteo_lines(200, rng)) + "\n")
    data = load_data(str(path))
    assert (len(data.train), len(data.val)) == (180, 20)
    assert data.schema.numeric[0] == "I1" and data.schema.categorical[-1] == "C26"
    assert data.train.numeric.shape == (180, 13) and data.train.categorical.shape == (180, 26)
    assert np.isfinite(data.train.numeric).all()
    assert set(np.unique(data.train.label)) <= {0.0, 1.0}
    assert data.train.categorical.max() < max(data.schema.vocab_sizes)


def test_criteo_wrong_column_count(tmp_path):
    path = tmp_path / "short.tsv"
    path.write_text("1\t2\t3\n0\t4\t5\n")
    with pytest.raises(UsageError, match="expected 40 tab-separated columns"):
        load_data(str(path))


def test_criteo_corrupt_integer(tmp_path):
    rng = np.random.default_rng(1)
    lines = _criteo_lines(5, rng)
    fields = lines[2].split("\t")
    fields[3] = "abc"
    lines[2] = "\t".join(fields)
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match="line 3: column I3 is not an integer"):
        load_data(str(path))


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(UsageError, match="data file not found"):
        load_data(str(tmp_path / "nope.tsv"))
    with pytest.raises(UsageError, match="unknown file type"):
        load_data(str(tmp_path / "data.xlsx"))


def test_csv_with_column_spec(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(2)
    frame = pd.DataFrame({
        "clicked": (rng.random(100) < 0.4).astype(int),
        "price": rng.random(100),
        "age": rng.integers(18, 80, 100),
        "city": rng.choice(["a", "b", "c"], 100),
        "zip": rng.integers(0, 4, 100),
    })
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    data = load_data(f"{path}?label=clicked&numeric=price,age&categorical=city,zip")
    assert data.schema.numeric == ("price", "age") and data.schema.categorical == ("city", "zip")
    np.testing.assert_array_equal(data.train.label, frame["clicked"].to_numpy()[:90])
    # Inference without a spec: numeric dtypes are numeric, strings categorical.
    inferred = load_data(f"{path}?label=clicked")
    assert "city" in inferred.schema.categorical and "price" in inferred.schema.numeric
    with pytest.raises(UsageError, match="no column"):
        load_data(f"{path}?label=missing")


def test_parquet(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"label": [0, 1] * 50, "x": np.arange(100.0), "c": ["u", "v", "w", "x"] * 25})
    path = tmp_path / "log.parquet"
    frame.to_parquet(path)
    data = load_data(str(path))
    assert data.schema.numeric == ("x",) and data.schema.categorical == ("c",)
    assert len(data.train) == 90


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(UsageError, match="cannot read as parquet"):
        load_data(str(path))
