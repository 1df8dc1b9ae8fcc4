"""`dcnprobe watch`: the view rendered to text and asserted on, fed by a record that grows
between looks (the `sleep` between looks appends the next piece: no real waiting)."""

import functools
import io

import pytest
from click.testing import CliRunner
from rich.console import Console

from dcnprobe.cli import cli
from dcnprobe.live.state import RunState
from dcnprobe.live.view import phase_bar, render, sparkline, watch
from dcnprobe.records import SCHEMA_VERSION, RecordFollower, RunWriter

MB = 1 << 20


def header():
    return {"schema": SCHEMA_VERSION, "settings": {"device": "cpu", "num_workers": 2}, "batches_per_epoch": 100}


def batch(epoch, i, total, step, data_wait=0.002):
    return {"epoch": epoch, "batch": i, "step": step, "t": step * 0.1, "data_wait": data_wait, "forward": 0.04,
            "backward": 0.05, "optimizer": 0.007, "other": total - data_wait - 0.097, "total": total}


def memory(step, epoch):
    return {"t": step * 0.1, "epoch": epoch, "step": step, "main_rss": 500 * MB + step * MB, "swap_used": 0,
            "workers": [{"pid": 7, "rss": 100 * MB + step * 2 * MB}, {"pid": 8, "rss": 100 * MB}]}


def pieces(slow=1.5, epoch2_batches=60, footer="ok"):
    """The record of a 2-epoch run, as the pieces in which a watcher would see it arrive."""
    out = [[("header", header())]]
    step = 0
    for epoch, n, seconds in ((1, 100, 0.1), (2, epoch2_batches, 0.1 * slow)):
        for start in range(0, n, 20):
            piece = []
            for i in range(start, min(n, start + 20)):
                piece.append(("batch", batch(epoch, i, seconds * (1 + 0.01 * (i % 3)), step,
                                             data_wait=0.002 if epoch == 1 else 0.002 + seconds - 0.1)))
                if step % 5 == 0:
                    piece.append(("memory", memory(step, epoch)))
                step += 1
            out.append(piece)
        if epoch == 1:
            out[-1].append(("loop_end", {"t": step * 0.1, "epoch": 1, "batches": n}))
    out[-1].append(("warning", {"t": step * 0.1, "epoch": 2, "batch": 30, "kind": "slowdown", "ratio": slow,
                                "ratio_ci": [slow - 0.05, slow + 0.05], "message": "dcnprobe: warning: epoch 2 "
                                f"runs {slow:.2f}x epoch 1; the extra time is in data_wait"}))
    if footer:
        out.append([("footer", {"status": footer, "t": step * 0.1})])
    return out


class GrowingRun:
    """Writes one more piece of the record each time the watcher sleeps."""

    def __init__(self, directory, parts):
        self.writer = RunWriter(directory)
        self.parts = list(parts)
        self.sleeps = 0
        self.append()

    def append(self):
        if self.parts:
            for kind, record in self.parts.pop(0):
                self.writer.write(kind, record)

    def __call__(self, seconds):
        self.sleeps += 1
        self.append()


def console(width=120):
    return Console(file=io.StringIO(), record=True, width=width, force_terminal=False, color_system=None)


def test_plain_lines_follow_a_growing_run_to_its_end(tmp_path):
    run = GrowingRun(tmp_path, pieces())
    out = console()
    state = watch(tmp_path, out, exit_at_end=True, live=False, sleep=run, clock=lambda: 0.0)
    text = out.export_text()
    lines = text.splitlines()
    assert lines[0] == "epoch 1: 100 batches, median 101 ms"
    assert lines[1].startswith("dcnprobe: warning: epoch 2 runs 1.50x epoch 1")
    assert lines[-1] == "run ended: ok"
    assert state.finished and len(state.epochs[2].totals) == 60
    assert run.sleeps == len(pieces()) - 1  # one look per piece: it stopped at the footer


@pytest.mark.parametrize("live", [False, True])
def test_a_record_longer_than_a_chunk_is_caught_up_in_one_look(tmp_path, monkeypatch, live):
    """Watching a long run that is already far along: everything written so far is read at
    the first look, a chunk after another, not a chunk per look (a million batches were 220
    looks, minutes behind the run)."""
    run = GrowingRun(tmp_path, [[piece for part in pieces() for piece in part]])
    monkeypatch.setattr("dcnprobe.live.view.RecordFollower", functools.partial(RecordFollower, chunk_bytes=2048))
    out = Console(file=io.StringIO(), record=True, width=120, force_terminal=live, color_system=None)
    state = watch(tmp_path, out, exit_at_end=True, live=live, sleep=run)
    assert (tmp_path / "run.jsonl").stat().st_size > 10 * 2048
    assert run.sleeps == 0 and state.finished and len(state.epochs[1].totals) == 100


def test_the_view_shows_epochs_phases_memory_progress_and_warnings(tmp_path):
    run = GrowingRun(tmp_path, pieces(footer=None))
    state = RunState()
    from dcnprobe.records import RecordFollower

    follower = RecordFollower(tmp_path)
    while run.parts:
        state.feed(follower.read())
        run(0)
    state.feed(follower.read())
    out = console()
    out.print(render(state, "runs/x"))
    text = out.export_text()
    assert "dcnprobe watch runs/x  running  (device=cpu, num_workers=2)" in text
    epoch2 = next(line for line in text.splitlines() if line.strip().startswith("2 "))
    assert "60" in epoch2 and "152 ms" in epoch2 and "1.50x (1.50-1.50)" in epoch2 and "running" in epoch2
    assert "data_wait" in text and "time per batch by phase" in text
    bars = [line for line in text.splitlines() if line.startswith("epoch   ")]
    assert len(bars) == 2 and bars[1].count("█") > bars[0].count("█")  # epoch 2's bar is longer
    main = next(line for line in text.splitlines() if "main RSS" in line)
    assert "▁" in main and "█" in main and "(range 500 MB-655 MB)" in main
    assert "workers RSS" in text and "swap used" in text and "device  -" in text
    assert "epoch 2: batch 60/100, 152 ms per batch now, 1.50x epoch 1, about 6s left in this epoch" in text
    assert "warning" in text and "runs 1.50x epoch 1" in text


def test_eta_uses_the_present_rate():
    state = RunState()
    state.feed([{"type": "header", **header()}])
    state.feed([{"type": "batch", **batch(1, i, 0.1, i)} for i in range(100)])
    state.feed([{"type": "loop_end", "epoch": 1}])
    state.feed([{"type": "batch", **batch(2, i, 0.1 if i < 30 else 1.0, 100 + i)} for i in range(50)])
    assert state.recent_rate() == 1.0  # the latest 20 batches, not the epoch's median
    assert state.eta_s() == 50 * 1.0


def test_ctrl_c_ends_the_watch_cleanly(tmp_path):
    GrowingRun(tmp_path, pieces(footer=None))

    def interrupted(seconds):
        raise KeyboardInterrupt

    state = watch(tmp_path, console(), live=False, sleep=interrupted)
    assert state.header is not None and not state.finished


def test_a_live_view_redraws_until_the_footer(tmp_path):
    run = GrowingRun(tmp_path, pieces(slow=3.0))
    out = Console(file=io.StringIO(), record=True, width=120, force_terminal=True, color_system=None)
    state = watch(tmp_path, out, exit_at_end=True, live=True, sleep=run)
    assert state.finished and "3.00x" in out.export_text()


def test_not_a_run_record_is_one_clear_error(tmp_path):
    (tmp_path / "run.jsonl").write_text('{"type":"batch","epoch":1,"total":0.1}\n')
    result = CliRunner().invoke(cli, ["watch", str(tmp_path), "--exit-at-end", "--plain"])
    assert result.exit_code != 0 and "no header" in str(result.exception)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("")
    result = CliRunner().invoke(cli, ["watch", str(tmp_path / "other")])
    assert "is not a run directory" in str(result.exception)


def test_watch_waits_for_a_run_that_has_not_started(tmp_path):
    later = tmp_path / "later"
    looks = []

    def sleep(seconds):
        looks.append(seconds)
        if len(looks) == 3:  # the run starts while the watcher waits
            run = GrowingRun(later, pieces())
            while run.parts:
                run(0)

    state = watch(later, console(), exit_at_end=True, live=False, sleep=sleep)
    assert state.finished and len(looks) == 3


def test_cli_prints_a_finished_run(tmp_path):
    run = GrowingRun(tmp_path, pieces())
    while run.parts:
        run(0)
    result = CliRunner().invoke(cli, ["watch", str(tmp_path), "--exit-at-end", "--plain"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "run ended: ok"


def test_sparkline_and_bar():
    assert sparkline([1, 1, 1]) == "▁▁▁"
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline(range(100), width=10) == sparkline(range(90, 100))
    assert phase_bar({"forward": 0.5, "backward": 0.5}, scale=1.0, width=10).plain == "█" * 10
    assert phase_bar({"forward": 0.25}, scale=1.0, width=10).plain in ("██", "███")
