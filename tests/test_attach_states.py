"""The attach's state machine (dcnprobe.attach.recorder and .epochs) on synthetic event
sequences, with an injected clock, into a real Probe's record. Milliseconds each.

Sequences are written in the notation of tests/programs/trace_events.py, which prints
what a real program does; those marked "captured" are what pytorch-lightning 2.6,
transformers 5.24 (Trainer) and accelerate 1.15 did with tests/programs/ at 2-3 batches
an epoch. The real programs run against the record in tests/test_frameworks.py.
"""

import json

import pytest

from dcnprobe.attach.clock import HeldClock
from dcnprobe.attach.notes import loop_shape, read_notes
from dcnprobe.attach.recorder import Recorder, RunBound
from dcnprobe.attach.states import EpochMode, PassKind
from dcnprobe.contract import AttachConfig
from dcnprobe.probe import Probe
from dcnprobe.runs import read_run

TICK = 0.001
WHY = {"N": "no_grad", "I": "inference_mode", "E": "eval-mode", "": None}


class Replay:
    """Plays a sequence of events into a Recorder as the agent's hooks would."""

    steady = True  # the recorder's steady-state paths (both_paths runs every test both ways)

    def __init__(self, out, mode=EpochMode.LOADER_PASS, start_record=None, **config):
        self.now = 0.0
        self.clock = HeldClock(lambda: self.now)
        self.probe = Probe(out, clock=self.clock, sample_interval=3600, stall_floor_s=3600)
        self.out = out  # the recorder starts the probe's record with the first epoch
        self.rec = Recorder(self.probe, AttachConfig(run_dir=str(out), **config), mode, self.clock,
                            start_record=start_record)
        self.rec.steady = self.steady
        self.passes = {}  # loader -> its passes whose iterator is not yet dropped, oldest first
        self.steps = []  # open optimizer steps: whether each counts
        self.cut = []

    def play(self, events: str):
        for token in events.split():
            self.now += TICK
            self.event(token)
        return self

    def event(self, token: str) -> None:
        rec = self.rec
        if token.startswith("+"):
            self.now += float(token[1:])
        elif token.startswith("ITER"):
            head, _, length = token.partition(":")  # ITER2:3: loader 2, which has 3 batches
            key, why = int(head[4]), WHY[head[5:]]
            self.passes.setdefault(key, []).append(rec.pass_started(key, key, why, int(length) if length else None))
        elif token[0] == "n" or token.startswith("STOP"):
            p = self.passes[int(token[-1])][-1]
            if p.ended and token[0] == "n":
                return
            if rec.item_requested(p):
                self.cut.append(p)
                return
            if token[0] == "n":
                self.now += TICK
                rec.item_received(p, TICK)
            else:
                rec.pass_exhausted(p)
        elif token.startswith("DEL"):
            p = self.passes[int(token[3:])].pop(0)  # a framework drops the old iterator after iter() on the new
            if not p.ended:
                rec.pass_dropped(p)
        elif token[0] == "F":
            rec.forward_began(training=token[1] == "t", grad=not token.endswith("N"))
            self.now += TICK
            rec.forward_ended()
        elif token == "B":
            rec.backward_began()
            self.now += TICK
            rec.backward_ended()
        elif token in ("S<", "W<"):  # W<: a wrapper optimizer (accelerate's) around the real one
            rec.step_began()
            self.steps.append(token == "S<")
        elif token == ">":
            self.now += TICK
            rec.step_ended(counts=self.steps.pop())
        elif token == "(":
            rec.phases.closure_begin()
        elif token == ")":
            rec.phases.closure_end()
        elif token == "M":
            rec.mark()
        else:
            raise ValueError(token)

    def finish(self):
        self.rec.finish()
        self.probe.finish("ok")
        return loop_shape(self.out)


@pytest.fixture(autouse=True, params=[True, False], ids=["steady", "general"])
def both_paths(request, monkeypatch):
    """Every sequence through the recorder's steady-state paths and through the general
    path alone: the same record either way."""
    monkeypatch.setattr(Replay, "steady", request.param)


def shape(epochs, validations):
    """Expected loop shape: epochs as (batches, steps), validations as (epoch, after_steps, batches)."""
    return {"epochs": [{"epoch": i, "batches": b, "steps": s} for i, (b, s) in enumerate(epochs, 1)],
            "validations": [{"epoch": e, "after_steps": a, "batches": b} for e, a, b in validations]}


def epoch_of(batch: str, count: int) -> str:
    return " ".join([batch] * count)


def test_lightning_sanity_check_validation_and_closure_steps(tmp_path):
    # Captured: sanity check (2 batches, never run out), then per epoch a pass over the
    # train loader that is never exhausted (Lightning stops at the known length and keeps
    # the iterator until the next epoch's iter()), the step running the closure.
    step = "S< ( Ft B ) >"
    lightning = (f"ITER1N:2 n1 FeN n1 FeN "
                 f"ITER2:3 n2 {step} n2 {step} n2 {step} +5 ITER1N:2 DEL1 n1 FeN n1 FeN "
                 f"ITER2:3 DEL2 n2 {step} n2 {step} n2 {step} ITER1N:2 DEL1 n1 FeN n1 FeN DEL2 DEL1")
    replay = Replay(tmp_path).play(lightning)
    assert replay.finish() == shape([(3, 3), (3, 3)], [(0, 0, 2), (1, 3, 2), (2, 3, 2)])
    # Each epoch ends where its last step ended, before validation (5 s later) began.
    run = read_run(tmp_path)
    assert run.epochs["t_end"].tolist() == pytest.approx(run.batches.groupby("epoch")["t"].max().tolist())
    batches = read_run(tmp_path, extra_fields=True).batches
    # The closure (training_step) is the loop's: its forward and backward are timed as such,
    # its own code (a tick before, between and after them) is `other`; the optimizer has the
    # step less the closure (a tick before it, two after: the step's own work).
    for phase, ticks in (("forward", 1), ("backward", 1), ("optimizer", 3)):
        assert batches[phase].tolist() == pytest.approx([ticks * TICK] * 6), phase
    assert [p["ended_by"] for p in read_notes(tmp_path)["passes"]] == [
        "it had given all its batches; another pass began"] * 2


def test_the_record_begins_with_the_first_epoch_and_describes_its_loader(tmp_path):
    began_with = []

    def start_record(p):
        began_with.append(p.loader_number)
        replay.probe.start({"loader": p.loader_number})

    replay = Replay(tmp_path, start_record=start_record)
    replay.play("ITER1N:2 n1 FeN n1 FeN ITER2:3 n2 S< ( Ft B ) > n2")
    assert began_with == [2]  # the training loader, not the sanity check's that came first
    types = [json.loads(line)["type"] for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert types[:2] == ["header", "validation"]  # what was seen before it follows the header


def test_lightning_limit_train_batches_validation_inside_the_epoch_and_accumulation(tmp_path):
    # Captured: limit_train_batches=4 of 6, val_check_interval=0.5, accumulate_grad_batches=2.
    lightning = ("ITER1N:1 n1 FeN ITER2:6 n2 Ft B n2 S< ( Ft B ) > ITER1N:1 DEL1 n1 FeN "
                 "n2 Ft B n2 S< ( Ft B ) > ITER1N:1 DEL1 n1 FeN DEL2 DEL1")
    replay = Replay(tmp_path).play(lightning)
    assert replay.finish() == shape([(4, 2)], [(0, 0, 1), (1, 1, 1), (1, 2, 1)])
    assert read_notes(tmp_path)["passes"][0]["ended_by"] == "the loop dropped the iterator"


def test_trainer_epochs_that_begin_in_eval_mode_and_a_loader_that_fetches_ahead(tmp_path):
    # Captured: accelerate's DataLoaderShard fetches one batch ahead, so the loader runs
    # out before the last step; evaluation leaves the model in eval mode (ITER1E).
    trainer = ("ITER1 n1 n1 Ft B S< > n1 Ft B S< > STOP1 Ft B S< > +5 ITER2E n2 n2 FeN STOP2 FeN DEL2 DEL1 "
               "ITER1E n1 n1 Ft B S< > n1 Ft B S< > STOP1 Ft B S< > ITER3E n3 n3 FeN STOP3 FeN DEL3 DEL1")
    replay = Replay(tmp_path).play(trainer)
    assert replay.finish() == shape([(3, 3), (3, 3)], [(1, 3, 2), (2, 3, 2)])
    run = read_run(tmp_path)
    # The epoch and its last batch end at the last step, not 5 s later when the loop moved on.
    assert run.batches["total"].max() < 0.1
    assert run.epochs["t_end"].iloc[0] == pytest.approx(run.batches["t"].iloc[2])
    assert read_notes(tmp_path)["final"] == {}  # no final note: that is the agent's


def test_trainer_evaluation_inside_the_epoch_and_accumulation_groups(tmp_path):
    # Captured: gradient_accumulation_steps=2 over 5 batches, eval_strategy="steps" every 2 steps.
    trainer = ("ITER1 n1 n1 n1 Ft B Ft B S< > n1 n1 Ft B Ft B S< > ITER2E +2 n2 STOP2 FeN DEL2 "
               "STOP1 Ft B S< > ITER3E n3 STOP3 FeN DEL3 DEL1")
    replay = Replay(tmp_path).play(trainer)
    assert replay.finish() == shape([(5, 3)], [(1, 2, 1), (1, 3, 1)])
    assert read_run(tmp_path).batches["total"].max() < 1  # the evaluation is in no training batch


def test_accelerate_skipped_wrapper_steps_count_nothing(tmp_path):
    # Captured, with the AcceleratedOptimizer's step written out (W<): it wraps the real
    # optimizer and skips its step while accumulating; the loss module is a forward too.
    accelerate = ("ITER1 n1 n1 Ft Ft B W< > n1 Ft Ft B W< S< > > n1 Ft Ft B W< > STOP1 Ft Ft B W< S< > > DEL1 "
                  "ITER2N n2 n2 FeN FtN n2 FeN FtN STOP2 FeN FtN DEL2")
    replay = Replay(tmp_path).play(accelerate)
    assert replay.finish() == shape([(4, 2)], [(1, 2, 3)])
    assert read_notes(tmp_path)["passes"][0]["ended_by"].startswith("loader ran out before its last batches")


def test_a_forgotten_model_train_still_trains_and_is_said(tmp_path):
    batch = "n1 Fe B S< >"
    replay = Replay(tmp_path).play(f"ITER1 {epoch_of('n1 Ft B S< >', 4)} STOP1 DEL1 ITER2N n2 FeN STOP2 DEL2 "
                                   f"ITER1E {epoch_of(batch, 4)} STOP1 DEL1 ITER2N n2 FeN STOP2 DEL2")
    assert replay.finish() == shape([(4, 4), (4, 4)], [(1, 4, 1), (2, 4, 1)])
    passes = read_notes(tmp_path)["passes"]
    assert [(p["began_as"], p["eval_forwards"]) for p in passes] == [(None, 0), ("eval-mode", 4)]
    assert replay.rec.guesses == ["epoch 2 trained with a module in eval mode (4 forward passes with gradients): "
                                  "model.train() was not called after validation?"]


def test_validation_inside_the_epoch_is_in_no_training_batch(tmp_path):
    replay = Replay(tmp_path).play("ITER1 n1 Ft B S< > n1 Ft B S< > ITER2N +0.5 n2 FeN n2 FeN STOP2 DEL2 "
                                   "n1 Ft B S< > STOP1 DEL1")
    assert replay.finish() == shape([(3, 3)], [(1, 2, 2)])
    run = read_run(tmp_path)
    assert run.batches["total"].max() < 0.1
    assert read_notes(tmp_path)["validation"][0]["duration_s"] >= 0.5


def test_a_pass_with_no_work_and_no_hint_is_validation_by_a_guess(tmp_path):
    replay = Replay(tmp_path).play("ITER1 n1 Ft B S< > n1 Ft B S< > STOP1 ITER2 n2 Ft n2 Ft STOP2 DEL2")
    assert replay.finish() == shape([(2, 2)], [(1, 2, 2)])
    assert read_notes(tmp_path)["validation"][0]["why"] == "no optimizer step or backward"
    assert len(replay.rec.guesses) == 1 and "counted as validation" in replay.rec.guesses[0]


def test_accumulation_batches_and_skipped_steps_keep_both_counts(tmp_path):
    # 6 batches, a step every 2; an AMP-skipped step (no hook) in the 2nd group; the last
    # 2 batches only accumulate.
    replay = Replay(tmp_path).play("ITER1 n1 Ft B n1 Ft B S< > n1 Ft B n1 Ft B n1 Ft B S< > n1 Ft B STOP1")
    assert replay.finish() == shape([(6, 2)], [])
    batches = read_run(tmp_path, extra_fields=True).batches
    assert batches["loader_batches"].tolist() == [2, 3, 1] and batches["optimizer_steps"].tolist() == [1, 1, 0]


def test_two_optimizers_step_in_one_batch(tmp_path):
    replay = Replay(tmp_path).play(f"ITER1 {epoch_of('n1 Ft B S< > Ft B S< >', 3)} STOP1")
    assert replay.finish() == shape([(3, 6)], [])
    assert read_run(tmp_path, extra_fields=True).batches["optimizer_steps"].tolist() == [2, 2, 2]


def test_max_batches_cuts_the_training_pass_and_epochs_ends_the_run(tmp_path):
    replay = Replay(tmp_path, max_batches=2, epochs=2)
    replay.play(f"ITER1N n1 FeN n1 FeN n1 FeN STOP1 ITER2 {epoch_of('n2 Ft B S< >', 3)} STOP2 "
                f"ITER2 {epoch_of('n2 Ft B S< >', 3)} STOP2")
    assert [p.kind for p in replay.cut] == [PassKind.TRAINING, PassKind.TRAINING]
    with pytest.raises(RunBound, match="epochs=2"):
        replay.play("ITER2")
    assert replay.finish() == shape([(2, 2), (2, 2)], [(0, 0, 3)])  # validation is never cut


def test_the_epochs_bound_waits_for_a_pass_that_trains(tmp_path):
    replay = Replay(tmp_path, epochs=1).play("ITER1 n1 Ft B S< > STOP1 ITER2E n2 FeN STOP2 ITER1E n1")
    with pytest.raises(RunBound):
        replay.play("Ft B")
    assert replay.finish() == shape([(1, 1)], [(1, 1, 1)])


def test_epoch_every_n_steps(tmp_path):
    replay = Replay(tmp_path, mode=EpochMode.EVERY_N_STEPS, epoch_every=3)
    replay.play(epoch_of("Ft B S< >", 7))
    assert replay.finish() == shape([(0, 3), (0, 3), (0, 1)], [])  # no loader: no loader batches


def test_mark_epoch_mid_pass_switches_to_marked_epochs(tmp_path):
    replay = Replay(tmp_path).play(f"ITER1 {epoch_of('n1 Ft B S< >', 3)} M {epoch_of('n1 Ft B S< >', 2)} M "
                                   f"{epoch_of('n1 Ft B S< >', 2)} STOP1 M")
    assert replay.rec.mode is EpochMode.MARKED
    assert replay.finish() == shape([(3, 3), (2, 2), (2, 2)], [])


def test_a_warm_up_step_before_the_loader_loop_leaves_marked_mode(tmp_path):
    replay = Replay(tmp_path, mode=EpochMode.MARKED).play(f"Ft B S< > ITER1 {epoch_of('n1 Ft B S< >', 3)} STOP1")
    assert replay.rec.mode is EpochMode.LOADER_PASS
    assert replay.finish()["epochs"][-1] == {"epoch": 2, "batches": 3, "steps": 3}


def test_every_field_the_attach_writes_is_documented(tmp_path):
    import json

    from dcnprobe import records
    from dcnprobe.attach import notes

    replay = Replay(tmp_path).play("ITER1N n1 FeN ITER2 n2 Ft B S< > n2 Ft B S< > STOP2 ITER3 n3 Ft STOP3")
    replay.rec.note(final=True, boundaries=replay.rec.boundaries(), guesses=replay.rec.guesses)
    replay.finish()
    for line in (tmp_path / "run.jsonl").read_text().splitlines():
        record = json.loads(line)
        kind = record.pop("type")
        table = records.COLUMNS.get(kind) or notes.COLUMNS[kind]
        if kind in (records.BATCH, notes.VALIDATION_RECORD, notes.PASS_RECORD):
            assert set(record) <= set(table) | {"t"}, kind


def test_a_held_clock_is_held_for_the_holding_thread_only():
    """The recorder closes a batch as of an earlier reading; the memory sampler, reading the
    same clock from its thread meanwhile, must get the time, not that reading."""
    import threading

    now = [10.0]
    clock = HeldClock(lambda: now[0])
    seen = []
    with clock.held_at(3.0):
        with clock.held_at(2.0):
            assert clock() == 2.0
        assert clock() == 3.0  # the outer hold is back
        thread = threading.Thread(target=lambda: seen.append(clock()))
        thread.start()
        thread.join()
    assert seen == [10.0] and clock() == 10.0


PLAIN = (f"ITER1 {epoch_of('n1 Ft Ft B S< >', 3)} STOP1 ITER2N n2 FeN n2 FeN STOP2 "
         f"ITER1 {epoch_of('n1 Ft Ft B S< >', 2)} n1 Ft B n1 Ft B S< > ITER2E n2 FeN STOP2 n1 Ft B S< > STOP1")


@pytest.mark.parametrize("events", [PLAIN, f"ITER1 {epoch_of('n1 Ft B S< > Ft B S< >', 3)} STOP1 ITER1 n1 Ft B W< S< > >"])
def test_the_steady_paths_write_what_the_general_path_writes(tmp_path, monkeypatch, events):
    """Batch for batch, phase time for phase time, on an injected clock: a plain loop (two
    outermost modules a step), validation inside an epoch, accumulation, two optimizers, a
    wrapper optimizer."""
    records = {}
    for steady in (True, False):
        monkeypatch.setattr(Replay, "steady", steady)
        out = tmp_path / str(steady)
        shape_seen = Replay(out).play(events).finish()
        batches = read_run(out, extra_fields=True).batches
        records[steady] = (shape_seen, batches.drop(columns=[c for c in MEASURED if c in batches]).to_dict("records"),
                           _unmeasured(read_notes(out)))
    assert records[True] == records[False]
    assert len(records[True][1]) >= 4 and records[True][1][0]["forward"] == pytest.approx(2 * TICK)


MEASURED = ("rss", "in_use", "py_blocks", "gc_s", "gc_gen2", "minflt", "majflt")  # of this process, not the clock


def _unmeasured(notes):
    timeline = [(kind, {k: v for k, v in record.items() if k not in MEASURED}) for kind, record in notes["timeline"]]
    return {**notes, "timeline": timeline}
