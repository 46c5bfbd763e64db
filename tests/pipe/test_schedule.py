"""Schedules as data: every stage does every micro-batch's passes once and in order, a
stage's sends meet its neighbour's receives in the same order, the whole pipeline runs to
the end with blocking receives (no deadlock), and ZB-H1's simulated bubble is smaller."""

import pytest

from deepspeed_ext.pipe.schedule import (
    BackwardInput,
    BackwardPass,
    BackwardWeight,
    ForwardPass,
    InferenceSchedule,
    RecvActivation,
    RecvGrad,
    SendActivation,
    SendGrad,
    TrainSchedule,
    ZeroBubbleSchedule,
)

SHAPES = [(1, 1), (2, 1), (2, 4), (3, 5), (4, 4), (4, 8), (4, 16), (8, 3)]


def of(instructions, kind):
    return [i.micro_batch for i in instructions if isinstance(i, kind)]


@pytest.mark.parametrize("schedule_class", [TrainSchedule, ZeroBubbleSchedule])
@pytest.mark.parametrize("stages,micro_batches", SHAPES)
def test_every_pass_once_and_transfers_match(schedule_class, stages, micro_batches):
    plans = [schedule_class(micro_batches, stages, s).instructions() for s in range(stages)]
    every = list(range(micro_batches))
    for stage, plan in enumerate(plans):
        assert of(plan, ForwardPass) == every
        backward = BackwardPass if schedule_class is TrainSchedule else BackwardInput
        assert of(plan, backward) == every
        if schedule_class is ZeroBubbleSchedule:
            assert of(plan, BackwardWeight) == every
            for j in every:  # the weight half after the input half
                assert plan.index(BackwardWeight(j)) > plan.index(BackwardInput(j))
        for j in every:
            assert plan.index(backward(j)) > plan.index(ForwardPass(j))
        if stage + 1 < stages:
            assert of(plan, SendActivation) == of(plans[stage + 1], RecvActivation) == every
            assert of(plans[stage + 1], SendGrad) == of(plan, RecvGrad) == every
    assert not of(plans[0], RecvActivation) and not of(plans[-1], SendActivation)


def run_pipeline(plans) -> int:
    """Run the plans with non-blocking sends and blocking receives, one instruction per tick
    per stage; returns the ticks taken (fails on a deadlock)."""
    position = [0] * len(plans)
    arrived = set()
    ticks = 0
    while any(p < len(plan) for p, plan in zip(position, plans)):
        moved = False
        for stage, plan in enumerate(plans):
            if position[stage] == len(plan):
                continue
            instruction = plan[position[stage]]
            if isinstance(instruction, RecvActivation) and ("act", stage, instruction.micro_batch) not in arrived:
                continue
            if isinstance(instruction, RecvGrad) and ("grad", stage, instruction.micro_batch) not in arrived:
                continue
            if isinstance(instruction, SendActivation):
                arrived.add(("act", stage + 1, instruction.micro_batch))
            if isinstance(instruction, SendGrad):
                arrived.add(("grad", stage - 1, instruction.micro_batch))
            position[stage] += 1
            moved = True
        assert moved, f"deadlock at {position}"
        ticks += 1
    return ticks


@pytest.mark.parametrize("schedule_class", [TrainSchedule, ZeroBubbleSchedule, InferenceSchedule])
@pytest.mark.parametrize("stages,micro_batches", SHAPES)
def test_pipelines_run_to_the_end(schedule_class, stages, micro_batches):
    run_pipeline([schedule_class(micro_batches, stages, s).instructions() for s in range(stages)])


def makespan(orders) -> int:
    """Unit-cost F, B and W passes (1F1B's whole backward, BW, costs 2 and sends when both
    halves are done); a stage waits for its neighbours' results."""
    stages = len(orders)
    done, clock, position = {}, [0] * stages, [0] * stages
    while any(p < len(o) for p, o in zip(position, orders)):
        for s in range(stages):
            if position[s] == len(orders[s]):
                continue
            kind, j = orders[s][position[s]]
            backward_needs = ("B", s + 1, j) if s < stages - 1 else ("F", s, j)
            need = {"F": ("F", s - 1, j) if s else None, "B": backward_needs, "BW": backward_needs,
                    "W": ("B", s, j)}[kind]
            if need is not None and need not in done:
                continue
            clock[s] = max(clock[s], done.get(need, 0)) + (2 if kind == "BW" else 1)
            done[("B" if kind == "BW" else kind, s, j)] = clock[s]
            position[s] += 1
    return max(clock)


def orders_of(schedule_class, stages, micro_batches):
    names = {ForwardPass: "F", BackwardPass: "BW", BackwardInput: "B", BackwardWeight: "W"}
    return [[(names[type(i)], i.micro_batch) for i in schedule_class(micro_batches, stages, s).instructions()
             if type(i) in names] for s in range(stages)]


@pytest.mark.parametrize("stages,micro_batches", [(2, 4), (4, 8), (4, 16), (8, 32)])
def test_zero_bubble_bubble_is_smaller(stages, micro_batches):
    work = 3 * micro_batches  # F, B and W of every micro-batch, per stage
    one_f_one_b = makespan(orders_of(TrainSchedule, stages, micro_batches)) - work
    zero_bubble = makespan(orders_of(ZeroBubbleSchedule, stages, micro_batches)) - work
    assert one_f_one_b == 3 * (stages - 1)  # (p - 1)(F + B + W)
    assert zero_bubble < one_f_one_b and zero_bubble <= stages + 1


def test_schedules_print_and_bound_buffers():
    text = str(TrainSchedule(micro_batches=4, stages=2, stage_id=1))
    assert text.splitlines()[0] == "TrainSchedule(micro_batches=4, stages=2, stage_id=1)"
    assert "RecvActivation(micro_batch=0) LoadMicroBatch(micro_batch=0) ForwardPass(micro_batch=0)" in text
    assert "ReduceTiedGrads() ReduceGrads() OptimizerStep()" in text
    assert [TrainSchedule(8, 4, s).num_pipe_buffers() for s in range(4)] == [4, 3, 2, 1]
    assert not any(isinstance(i, (BackwardPass, SendGrad)) for i in InferenceSchedule(3, 2, 0).instructions())
    with pytest.raises(ValueError, match="at least one micro-batch"):
        TrainSchedule(0, 2, 0)
    with pytest.raises(ValueError, match="not a stage"):
        TrainSchedule(2, 2, 2)
