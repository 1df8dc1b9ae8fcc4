import json

import pytest

from dcnprobe.errors import UsageError
from dcnprobe.sweep import combinations, parse_vary

from conftest import TINY_BATCH


def test_parse_vary_uses_each_settings_parser():
    assert parse_vary(["num_workers=0,2", "persistent-workers=true,false"]) == {
        "num_workers": [0, 2], "persistent_workers": [True, False]}
    with pytest.raises(UsageError):
        parse_vary(["num_workers=0,two"])
    with pytest.raises(UsageError):
        parse_vary(["colour=red"])


def test_the_matrix_is_the_product():
    combos = combinations({"num_workers": [0, 2], "loader": ["batched", "per-sample"]})
    assert len(combos) == 4 and {"num_workers": 2, "loader": "per-sample"} in combos


@pytest.mark.slow
def test_a_real_sweep_with_an_impossible_combination(tiny_data, tmp_path, capsys):
    from dcnprobe.cli import main

    main(["sweep", "--vary", "num_workers=0,2", "--vary", "persistent_workers=true,false", "--set", "device=cpu",
          "--data", tiny_data, "--batch-size", str(TINY_BATCH), "--max-batches", "12", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "sweep.json").read_text())
    assert len(result["trials"]) == 3  # 0 workers with persistence cannot run
    assert result["invalid"][0]["settings"] == {"num_workers": "0", "persistent_workers": "true"}
    # 12 batches an epoch are too few to call a trial slow: whatever the machine's noise,
    # every trial must come back measured and healthy rather than crashed or slow.
    assert [t["status"] for t in result["trials"]] == ["ok", "ok", "ok"]
    assert (tmp_path / "report.html").stat().st_size > 10_000  # the plots are embedded
    assert "0 of 3 runnable combinations are slow" in capsys.readouterr().out
