"""`dcnprobe watch RUN` on a distributed run: one line per rank, fed by rank records that
grow between looks (the injected `sleep` appends the next piece to every rank: no real
waiting)."""

import io

from rich.console import Console

from dcnprobe.cli import main
from dcnprobe.distributed.layout import rank_dir
from dcnprobe.live.ranks import RanksState, rank_line, render_ranks, watch_ranks
from dcnprobe.records import SCHEMA_VERSION, RunWriter


def rank_pieces(rank, slow_rank=1, footer="ok"):
    """Rank `rank`'s record in pieces of 20 batches: 2 epochs of 100; from epoch 2 the slow
    rank's forward takes 50 ms more and every other rank waits that long in collectives."""
    header = {"schema": SCHEMA_VERSION, "settings": {"num_workers": 0}, "batches_per_epoch": 100, "rank": rank,
              "world_size": 2, "local_rank": rank, "host": f"node{rank}", "t0_unix": 1.76e9}
    out, step = [[("header", header)]], 0
    for epoch in (1, 2):
        for start in range(0, 100, 20):
            piece = []
            for i in range(start, start + 20):
                extra = 0.05 if epoch == 2 else 0.0
                forward = 0.04 + (extra if rank == slow_rank else 0.0) + 0.001 * (i % 3)
                collective = 0.002 + (0.0 if rank == slow_rank else extra)
                total = 0.002 + forward + 0.05 + collective
                piece.append(("batch", {"epoch": epoch, "batch": i, "step": step, "t": step * 0.1, "data_wait": 0.002,
                                        "forward": forward, "backward": 0.05, "collective": collective,
                                        "total": total}))
                step += 1
            out.append(piece)
        out[-1].append(("loop_end", {"t": step * 0.1, "epoch": epoch, "batches": 100}))
    if footer:
        out.append([("footer", {"status": footer, "t": step * 0.1})])
    return out


class GrowingRanks:
    def __init__(self, run_dir, ranks=2, **kwargs):
        # Every line flushed as written: the view is under test here, not the flush policy.
        self.writers = [RunWriter(rank_dir(run_dir, r), flush_every_s=0.0) for r in range(ranks)]
        self.parts = [rank_pieces(r, **kwargs) for r in range(ranks)]
        self.append()

    def append(self):
        for writer, parts in zip(self.writers, self.parts):
            if parts:
                for kind, record in parts.pop(0):
                    writer.write(kind, record)

    def __call__(self, seconds):
        self.append()


def console(width=140):
    return Console(file=io.StringIO(), record=True, width=width, force_terminal=False, color_system=None)


def test_plain_lines_name_each_rank_until_every_rank_ends(tmp_path):
    run = GrowingRanks(tmp_path)
    out = console()
    ranks = watch_ranks(tmp_path, out, exit_at_end=True, sleep=run, live=False, clock=lambda: 0.0)
    text = out.export_text()
    assert ranks.finished and sorted(ranks.states) == [0, 1]
    for rank in (0, 1):
        assert f"rank {rank}: epoch 1: 100 batches" in text
        assert f"rank {rank}: run ended: ok" in text
    lines = text.splitlines()
    assert sum(line.startswith("rank 0: epoch 2") for line in lines) == 1


def test_one_line_per_rank_shows_where_the_time_goes(tmp_path):
    run = GrowingRanks(tmp_path)  # the headers
    ranks = RanksState(tmp_path)
    ranks.poll()
    assert rank_line(1, ranks.states[1]) == "rank 1 (node1): started, no batch yet"
    run(0)  # the first 20 batches of each rank
    ranks.poll()
    line = rank_line(1, ranks.states[1])
    assert line.startswith("rank 1 (node1): epoch 1, batch 20/100") and "collective 2%" in line
    for _ in range(7):  # epoch 2, 60 batches in
        run(0)
    ranks.poll()
    waiting, slow = rank_line(0, ranks.states[0]), rank_line(1, ranks.states[1])
    assert waiting.startswith("rank 0 (node0): epoch 2, batch 60/100") and "collective 36%" in waiting
    assert "1.5" in waiting.split("x epoch 1")[0][-5:]  # both ranks take ~1.5x as long per batch
    assert "collective 1%" in slow


def test_the_table_has_a_row_per_rank_with_its_collective_share(tmp_path):
    run = GrowingRanks(tmp_path)
    for _ in range(11):  # every piece, the footers too
        run(0)
    ranks = RanksState(tmp_path)
    ranks.poll()
    out = console()
    out.print(render_ranks(ranks, "RUN"))
    text = out.export_text()
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip()[:1].isdigit()}
    assert set(rows) == {"0", "1"}
    assert "node0" in rows["0"] and "node1" in rows["1"]
    # Epoch 2: rank 0 waits 52 of 146 ms in collectives (36%), the slow rank 2 of 146.
    assert "36%" in rows["0"] and " 1%" in rows["1"]
    assert "2 of 2 ranks" in text and "ok" in rows["0"]


def test_watch_command_takes_a_distributed_run(tmp_path, capsys):
    run = GrowingRanks(tmp_path)
    for _ in range(12):
        run(0)
    try:
        main(["watch", str(tmp_path), "--exit-at-end", "--plain", "--interval", "0.05"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    assert "rank 1: run ended: ok" in out and "rank 0: epoch 2:" in out
