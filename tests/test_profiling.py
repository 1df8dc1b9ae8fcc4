import json
import stat

import pytest

from dcnprobe.executables import find_tool
from dcnprobe.probe import Probe
from dcnprobe.profiling.compare import function_growth, growth
from dcnprobe.profiling.flamegraph import function_shares, parse_collapsed, to_speedscope, to_svg
from dcnprobe.profiling.session import EpochProfiler, read_profiles

from conftest import TINY_BATCH

RAW_1 = "main (a.py:1);train (a.py:5);step (a.py:9) 80\nmain (a.py:1);train (a.py:5);metric (m.py:3) 20\n"
RAW_2 = "main (a.py:1);train (a.py:5);step (a.py:9) 60\nmain (a.py:1);train (a.py:6);metric (m.py:4) 40\n"


def test_collapsed_stacks_and_shares():
    stacks = parse_collapsed(RAW_1)
    assert stacks[("main (a.py:1)", "train (a.py:5)", "step (a.py:9)")] == 80
    shares = function_shares(parse_collapsed(RAW_2))
    assert shares["train (a.py)"] == pytest.approx(1.0)  # two lines of one function merge
    assert shares["metric (m.py)"] == pytest.approx(0.4)


def test_function_growth_names_what_grew():
    rows = function_growth(parse_collapsed(RAW_1), parse_collapsed(RAW_2))
    assert rows[0][0] == "metric (m.py)"
    assert rows[0][1] == pytest.approx(0.2) and rows[0][2] == pytest.approx(0.4)
    assert all(name != "step (a.py)" for name, *_ in rows)  # its share fell


def test_growth_of_sites():
    assert growth({"a": 10, "b": 5}, {"a": 11, "b": 50, "c": 1}, minimum=2) == [("b", 5, 50)]


def test_svg_and_speedscope_are_well_formed():
    stacks = parse_collapsed(RAW_1)
    svg = to_svg(stacks, "title")
    assert svg.startswith("<svg") and "metric (m.py:3)" in svg and "20 samples (20.0%)" in svg
    data = to_speedscope(stacks, "epoch 1")
    profile = data["profiles"][0]
    assert profile["type"] == "sampled" and sum(profile["weights"]) == 100
    assert {f["name"] for f in data["shared"]["frames"]} == {"main", "train", "step", "metric"}
    json.dumps(data)


def test_a_missing_tool_is_one_line_and_the_others_still_run(tiny_data, tmp_path, monkeypatch):
    from dcnprobe.model.trainer import TrainJob, fit

    import dcnprobe.profiling.tools as tools
    from dcnprobe.settings import Settings

    monkeypatch.setattr(tools, "find_tool", lambda name: None)
    warnings = []
    plugin = EpochProfiler({1: ("pyspy", "torch")}, tmp_path / "profiles", warn=warnings.append, torch_active=2)
    fit(TrainJob(settings=Settings(device="cpu", batch_size=TINY_BATCH), epochs=1, max_batches=8, data=tiny_data),
        probe=Probe(tmp_path, listeners=[plugin]))
    assert warnings == ["py-spy is not installed: pip install py-spy (skipping py-spy)"]
    assert (tmp_path / "profiles" / "epoch1-torch.trace.json").exists()
    assert "pyspy" not in plugin.artefacts[1]
    # what the launcher reads back, in another process
    profiles = read_profiles(tmp_path / "profiles")
    assert set(profiles.artefacts[1]) == {"torch"} and "pyspy" in profiles.unavailable
    assert profiles.artefacts[1]["torch"].operators


def test_py_spy_without_permission_is_one_line(tiny_data, tmp_path, monkeypatch):
    """No machine without ptrace permission is here (this one runs as root), so a stand-in
    py-spy that answers as py-spy does on macOS without sudo takes its place."""
    from dcnprobe.model.trainer import TrainJob, fit

    import dcnprobe.profiling.pyspy as pyspy
    from dcnprobe.settings import Settings

    fake = tmp_path / "py-spy"
    fake.write_text("#!/bin/sh\necho 'Error: Permission Denied: Try running again with elevated permissions'\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(pyspy, "find_tool", lambda name: str(fake))
    warnings = []
    plugin = EpochProfiler({1: ("pyspy",)}, tmp_path / "out", warn=warnings.append)
    fit(TrainJob(settings=Settings(device="cpu", batch_size=TINY_BATCH), epochs=1, max_batches=4, data=tiny_data),
        probe=Probe(tmp_path, listeners=[plugin]))
    assert len(warnings) == 1 and "ptrace not permitted" in warnings[0] and "skipping py-spy" in warnings[0]


def profile(tmp_path, fault, tools="pyspy,memray,torch"):
    from dcnprobe.cli import main

    main(["profile-epoch", "2", "--fault", fault, "--max-batches", "60", "--tools", tools,
          "--out", str(tmp_path)])
    return (tmp_path / "profile.md").read_text()


needs_pyspy = pytest.mark.skipif(find_tool("py-spy") is None, reason="py-spy is not installed")


@pytest.mark.slow
@needs_pyspy
def test_py_spy_names_the_metric_computation_on_unbounded_metric(tmp_path):
    report = profile(tmp_path, "unbounded-metric", tools="pyspy")
    table = report.split("Functions whose share of samples grew most")[1]
    first_row = table.split("\n| `")[1]
    assert first_row.startswith(("UnboundedMetric.after_step", "roc_auc")), first_row
    for name in ("epoch2-pyspy.svg", "epoch2-pyspy.speedscope.json", "epoch1-pyspy.collapsed.txt"):
        assert (tmp_path / "profiles" / name).exists()


@pytest.mark.slow
def test_memray_shows_the_growing_site_on_graph_retention(tmp_path):
    pytest.importorskip("memray")
    report = profile(tmp_path, "graph-retention", tools="memray,torch")
    table = report.split("still held at its end")[1]
    first_row = table.split("\n| `")[1]
    assert first_row.startswith("forward (model/layers.py"), first_row
    for name in ("epoch2-memray.flamegraph.html", "epoch2-memray.leaks.html", "epoch2-memray.stats.json",
                 "epoch2-torch.trace.json", "epoch2-torch.operators.txt"):
        assert (tmp_path / "profiles" / name).stat().st_size > 0
    assert "aten::" in report
