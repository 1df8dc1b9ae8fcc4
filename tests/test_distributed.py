"""Distributed runs read together: which rank holds the others back, and why.

Records are synthetic (tests/synthetic_ranks.py: each rank's own work from write_run,
coupled at every step as synchronous data parallelism couples ranks) and written with the
real RunWriter; no timing. Real torchrun runs belong to the attach's tests.
"""

import json

import pytest
from synthetic_ranks import write_ranks
from synthetic_runs import MB

from dcnprobe.analysis import analyze_run
from dcnprobe.cli import main
from dcnprobe.distributed import straggler as sg
from dcnprobe.distributed.analysis import analyze_ranks, write_ranks_analysis
from dcnprobe.distributed.layout import rank_dirs, rank_info
from dcnprobe.distributed.reader import read_ranks
from dcnprobe.distributed.steps import own_time_run
from dcnprobe.errors import UsageError


def ranks_run(tmp_path, ranks, **kwargs):
    return write_ranks(tmp_path / "run", ranks, **kwargs)


def test_a_clean_run_names_no_straggler(tmp_path):
    result = analyze_ranks(ranks_run(tmp_path, [{}, {}]))
    assert result.judgement.kind == sg.NOT_SLOW and not result.slowdown
    assert result.straggler is None and result.judgement.stragglers == []
    assert max(result.judgement.scores.values()) < 0.1
    assert result.verdict.startswith("Not slow (2 ranks)")
    assert "imbalance" not in result.verdict


def test_a_rank_slowed_in_its_own_compute_is_named_and_the_other_waited_for_it(tmp_path):
    result = analyze_ranks(ranks_run(tmp_path, [{}, {"slowdown": 1.6, "slow_phase": "forward"}]))
    j = result.judgement
    assert j.kind == sg.STRAGGLER and result.straggler == 1
    assert j.changes[1].score > 0.8 and j.changes[0].score < 0.1
    healthy, slow = j.changes[0], j.changes[1]
    # The healthy rank's collective wait grew by about the slowdown; its compute did not.
    assert healthy.collective.significant and healthy.collective.delta > 0.05
    assert not healthy.compute.significant and abs(healthy.compute.delta) < 0.005
    assert slow.compute.significant and not slow.collective.significant
    assert slow.last_share > 0.9
    assert "Straggler: rank 1" in result.verdict
    # Its own cause is what the single-run analysis says of its own time, whatever that is.
    own = analyze_run(own_time_run(result.ranks.runs[1]))
    assert result.own[1].causes[0].id == own.causes[0].id
    assert "forward" in result.own_growth(1) and list(result.own_growth(1))[0] == "forward"


def test_a_straggler_whose_workers_grow_gets_that_cause(tmp_path):
    result = analyze_ranks(ranks_run(tmp_path, [
        {"workers": 2},
        {"workers": 2, "worker_uss_per_step": 0.5 * MB, "slowdown": 1.6, "slow_phase": "data_wait"}]))
    assert result.straggler == 1
    assert result.own[1].causes[0].id == "worker-memory-growth"
    assert "Rank 1's own cause: worker-memory-growth" in result.verdict
    path = write_ranks_analysis(result)
    saved = json.loads(path.read_text())
    assert saved["straggler"]["rank"] == 1 and saved["straggler"]["cause"]["id"] == "worker-memory-growth"
    assert saved["straggler"]["score"] > 0.8 and saved["straggler"]["evidence"]
    assert saved["straggler"]["analysis"] == "rank1/analysis.json"
    assert json.loads((path.parent / "rank1" / "analysis.json").read_text())["causes"][0]["id"] == \
        "worker-memory-growth"
    summary = {r["rank"]: r for r in saved["ranks"]}
    assert [e["epoch"] for e in summary[0]["epochs"]] == [1, 2]
    epoch1, epoch2 = summary[0]["epochs"]
    assert epoch2["median_collective_s"] - epoch1["median_collective_s"] > 0.05  # rank 0 waited
    assert abs(epoch2["median_compute_s"] - epoch1["median_compute_s"]) < 0.005


def test_ranks_that_slow_down_alike_share_the_cause(tmp_path):
    result = analyze_ranks(ranks_run(tmp_path, [{"slowdown": 1.6}, {"slowdown": 1.6}]))
    assert result.slowdown and result.judgement.kind == sg.SHARED
    assert result.straggler is None and result.judgement.stragglers == []
    assert max(result.judgement.scores.values()) < 0.2
    assert "the cause is shared" in result.verdict
    assert sorted(result.explains) == [0, 1]  # both ranks' own causes are the run's
    assert result.to_json()["straggler"] is None and result.to_json()["shared"]["causes"]


def test_a_rank_that_slowed_more_is_named_with_the_shared_part_said(tmp_path):
    # Rank 0's own work grew 20 ms, rank 1's 60 ms: rank 0 waits 40 ms a step for rank 1.
    result = analyze_ranks(ranks_run(tmp_path, [{"slowdown": 1.2}, {"slowdown": 1.6}]))
    assert result.straggler == 1
    assert 0.5 < result.judgement.changes[1].score < 0.85
    assert "Part of the slowdown is shared" in result.verdict


@pytest.mark.parametrize("footer", [None, "crashed"])
def test_a_rank_that_crashed_is_named_and_the_others_records_are_kept(tmp_path, footer):
    run = ranks_run(tmp_path, [{}, {"slowdown": 1.6}], crash={"rank": 1, "step": 157, "footer": footer})
    ranks = read_ranks(run)
    assert ranks.status == "crashed"
    assert [e.rank for e in ranks.failed] == [1]
    end = ranks.failed[0]
    assert (end.epoch, end.batch, end.step) == (2, 37, 157)
    assert ranks.runs[0].status == "interrupted" and len(ranks.runs[0].batches) == 158
    result = analyze_ranks(ranks)
    how = "died (its record has no footer)" if footer is None else "crashed"
    assert result.verdict.startswith(f"Crashed: rank 1 {how} in epoch 2 after 38 of its batches (158 in all)")
    assert "rank 0 interrupted" in result.verdict
    assert result.straggler == 1  # what was recorded before the crash still shows who was slow
    assert result.to_json()["status"] == "crashed"


def test_four_ranks_one_on_a_busy_host(tmp_path):
    run = ranks_run(tmp_path, [{}, {}, {"slowdown": 1.5, "outside_load": {2: 0.6}}, {}],
                    hosts=["node0", "node0", "node1", "node1"])
    result = analyze_ranks(run)
    assert result.straggler == 2
    assert {r: round(s, 1) for r, s in result.judgement.scores.items()} == {0: 0.0, 1: 0.0, 2: 1.0, 3: 0.0}
    assert result.own[2].causes[0].id == "machine-contention"
    assert [result.judgement.changes[r].role for r in (0, 1, 3)] == ["waited"] * 3
    assert result.to_json()["ranks"][2]["host"] == "node1"


def test_two_of_four_ranks_slow_are_both_named(tmp_path):
    result = analyze_ranks(ranks_run(tmp_path, [{}, {"slowdown": 1.5}, {}, {"slowdown": 1.5}]))
    assert result.judgement.kind == sg.STRAGGLER
    assert sorted(result.judgement.stragglers) == [1, 3]
    assert result.straggler is None  # not one rank: the verdict names both
    assert "Stragglers: rank" in result.verdict


def test_without_collective_time_no_rank_is_named(tmp_path):
    result = analyze_ranks(ranks_run(tmp_path, [{}, {"slowdown": 1.6}], collectives=False))
    assert result.judgement.kind == sg.UNMEASURED and result.straggler is None
    assert "no rank is named" in result.verdict


def test_a_rank_slower_in_every_epoch_is_an_imbalance_not_a_slowdown(tmp_path):
    result = analyze_ranks(ranks_run(tmp_path, [{}, {"extra_forward_s": 0.03}]))
    assert result.judgement.kind == sg.NOT_SLOW and result.straggler is None
    assert "The other ranks wait for rank 1" in result.verdict and "constant imbalance" in result.verdict


def test_layout_and_reader(tmp_path):
    run = ranks_run(tmp_path, [{}, {}], batches=20)
    assert list(rank_dirs(run)) == [0, 1]
    ranks = read_ranks(run)
    assert ranks.distributed and ranks.world_size == 2 and ranks.infos[1].host == "node0"
    assert ranks.infos[1].t0_unix is not None and ranks.status == "ok"
    single = read_ranks(run / "rank0")  # a run directory of its own: rank 0 of 1
    assert not single.distributed and single.ranks == [0]
    assert rank_info({}) == rank_info({"rank": None})  # single-process records: rank 0 of 1
    assert rank_info({}).world_size == 1
    (run / "rank3").mkdir()  # a rank that died before writing its header
    (run / "rank2").mkdir()
    ranks = read_ranks(run)
    assert ranks.missing == [2, 3] and ranks.status == "crashed"


def test_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "rank0").mkdir()
    with pytest.raises(UsageError, match="no rank of"):
        read_ranks(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    (tmp_path / "rank0" / "run.jsonl").write_text('{"type": "batch"}\n{"type": "batch"}\n')
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "not a dcnprobe run record" in err and len(err.strip().splitlines()) == 1


def test_analyze_command_on_a_distributed_run(tmp_path, capsys):
    run = ranks_run(tmp_path, [{}, {"slowdown": 1.6}])
    _run_main(["analyze", str(run)])
    out = capsys.readouterr().out
    assert out.startswith("Slow (2 ranks)") and "Straggler: rank 1" in out
    assert "per rank, epoch 1 -> epoch 2" in out
    saved = json.loads((run / "analysis.json").read_text())
    assert saved["kind"] == "distributed" and saved["straggler"]["rank"] == 1
    assert all((run / f"rank{r}" / "analysis.json").exists() for r in (0, 1))
    # The waiting rank's own time did not slow: its own analysis says so, not a cause.
    rank0 = json.loads((run / "rank0" / "analysis.json").read_text())
    assert rank0["slowdown"] is False


def _run_main(args):
    try:
        main(args)
    except SystemExit as exc:  # click may exit 0 at the end
        assert exc.code in (0, None)
