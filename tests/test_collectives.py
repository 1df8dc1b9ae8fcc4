"""Time blocked in collectives, and which rank a process is: the pieces of the per-rank
attach that run without launching ranks. A real gloo process group of one (in this
process) exercises DDP's communication hook and the explicit calls; the real multi-rank
runs are in test_distributed_attach.py (slow)."""

import socket
import time

import pytest
import torch
import torch.distributed as dist
from synthetic_ranks import write_ranks

from dcnprobe.attach.collectives import Collectives
from dcnprobe.attach.phases import PhaseSpans
from dcnprobe.attach.ranks import this_rank
from dcnprobe.distributed.analysis import last_by_chance
from dcnprobe.harness.early_stop import EarlyStop
from dcnprobe.harness.trial_records import TrialRecords, analyze_trial
from dcnprobe.hooks import COLLECTIVE


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def spans() -> tuple[PhaseSpans, dict[str, float], Clock]:
    clock, added = Clock(), {}
    return PhaseSpans(clock, lambda phase, s: added.__setitem__(phase, added.get(phase, 0.0) + s)), added, clock


def test_a_wait_inside_backward_is_collective_time_not_backward():
    phases, added, clock = spans()
    phases.backward_begin()
    clock.now = 0.010
    phases.collective(0.004)  # DDP waited 4 ms for its buckets at backward's end
    phases.backward_end()
    assert added == {COLLECTIVE: 0.004, "backward": pytest.approx(0.006)}


def test_a_collective_in_a_step_is_not_optimizer_time_and_one_outside_any_phase_is_its_own():
    phases, added, clock = spans()
    phases.step_begin()
    clock.now = 0.005
    phases.collective(0.002)  # an all_reduce of the gradients inside a custom step
    clock.now = 0.008
    phases.step_end()
    phases.collective(0.003)  # a metric all_reduce in the loop
    assert added == {COLLECTIVE: 0.005, "optimizer": pytest.approx(0.006)}


def test_an_untimed_forward_does_not_carry_its_collective_into_the_next_one():
    phases, added, clock = spans()
    phases.forward_begin(timed=False)
    phases.collective(0.002)
    phases.forward_end()
    phases.forward_begin(timed=True)
    clock.now = 0.010
    phases.forward_end()
    assert added["forward"] == pytest.approx(0.010)


def test_the_bucket_wait_runs_from_the_last_launch_to_the_last_completion():
    clock = Clock()
    collectives = Collectives(lambda s: None, clock)

    class Done:
        def __init__(self) -> None:
            self.callbacks = []

        def add_done_callback(self, fn):
            self.callbacks.append(fn)

    futures = []
    hook = collectives.timed_hook(lambda state, bucket: futures.append(Done()) or futures[-1])
    for launched in (0.001, 0.004):  # two buckets, the second when backward's compute ends
        clock.now = launched
        hook(None, None)
    clock.now = 0.009
    for f in futures:
        f.callbacks[0](f)
    clock.now = 0.010
    assert collectives.backward_wait() == pytest.approx(0.005)
    assert collectives.backward_wait() == 0.0  # nothing launched since


@pytest.fixture
def one_rank_group():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_ddp_gets_a_timed_hook_and_explicit_calls_are_timed_on_a_real_process_group(one_rank_group):
    waits, original = [], dist.all_reduce
    collectives = Collectives(waits.append, time.perf_counter)
    collectives.install()
    assert dist.all_reduce is not original
    try:
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
        collectives.adopt(model)
        reference = torch.nn.Linear(4, 1)
        reference.load_state_dict(model.module.state_dict())
        x = torch.randn(8, 4)
        model(x).sum().backward()
        assert collectives.backward_wait() >= 0.0 and not collectives.launched  # buckets were launched and read
        reference(x).sum().backward()  # the gradients are those of the default reduction (world of one)
        assert torch.allclose(model.module.weight.grad, reference.weight.grad)
        dist.all_reduce(torch.ones(2))
        dist.barrier()
        dist.all_reduce(torch.ones(2), async_op=True).wait()  # its wait is in Work.wait: not timed
        assert len(waits) == 2 and all(w >= 0 for w in waits)
        assert collectives.notes == []
    finally:
        collectives.remove()
    assert dist.all_reduce is original and dist.distributed_c10d.all_reduce is original


def test_a_script_registering_its_own_hook_keeps_it_and_it_is_timed(one_rank_group):
    collectives = Collectives(lambda s: None, time.perf_counter)
    collectives.install()
    try:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        calls = []

        def mine(state, bucket):
            calls.append(1)
            return allreduce_hook(state, bucket)

        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
        model.register_comm_hook(None, mine)
        collectives.adopt(model)  # already hooked: left alone
        model(torch.randn(8, 4)).sum().backward()
        assert calls and collectives.backward_wait() >= 0.0
    finally:
        collectives.remove()


def test_which_rank_from_torchrun_environment():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    fields = this_rank(env)
    assert (fields["rank"], fields["world_size"], fields["local_rank"]) == (3, 4, 1) and fields["host"]
    assert this_rank({"RANK": "0", "WORLD_SIZE": "1"}) is None  # a world of one is an ordinary run
    assert this_rank({}) is None and this_rank({"RANK": "x", "WORLD_SIZE": "2"}) is None


def test_arriving_last_by_chance():
    assert last_by_chance(0.5, 40, 2) > 0.4  # half the steps of two ranks: chance
    assert last_by_chance(0.9, 40, 2) < 1e-5
    assert last_by_chance(0.6, 5000, 2) < 1e-10 and last_by_chance(0.5, 5000, 2) > 0.4
    assert last_by_chance(1.0, 10, 1) == 1.0


def test_a_distributed_trial_is_followed_per_rank_and_judged_by_its_straggler(tmp_path):
    out = write_ranks(tmp_path / "run", [{}, {"slowdown": 1.6, "slow_phase": "forward"}])
    records = TrialRecords(out, lambda: EarlyStop(1.2))
    read = records.read()
    assert records.started and {r.get("rank") for r in read if r.get("type") == "header"} == {0, 1}
    assert records.decide().startswith("rank ")  # every rank is slower by its total: the others wait
    analysis, label = analyze_trial(out, 1.2)
    assert label == "rank 1 of 2 (the others wait for it): "
    assert analysis.signals.slowdown and (out / "analysis.json").exists()
