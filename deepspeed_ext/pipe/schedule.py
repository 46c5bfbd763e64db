"""Pipeline schedules as objects: for one stage, the ordered instructions of one batch
(DeepSpeed's deepspeed.runtime.pipe.schedule). A reader can print them:

    >>> print(TrainSchedule(micro_batches=4, stages=2, stage_id=1))
    TrainSchedule(micro_batches=4, stages=2, stage_id=1)
      0: RecvActivation(micro_batch=0) LoadMicroBatch(micro_batch=0) ForwardPass(micro_batch=0)
      1: BackwardPass(micro_batch=0) SendGrad(micro_batch=0)
      ...

A step is one compute instruction with the loads and transfers around it. Every stage's
order comes from one schedule of the whole pipeline, so the sends of one stage meet the
receives of its neighbours in the same order, and the pipeline cannot deadlock.

- TrainSchedule: 1F1B (PipeDream-Flush), DeepSpeed's training schedule: stage s runs
  p - s - 1 forwards ahead, then alternates a forward and a backward, so at most p - s
  micro-batches' activations are held (p on the first stage).
- ZeroBubbleSchedule: ZB-H1 (Qi et al., "Zero Bubble Pipeline Parallelism", 2023): each
  backward is split into BackwardInput (the gradient the previous stage waits for) and
  BackwardWeight (the parameters' gradients, which nobody waits for). A stage sends its
  input gradient as soon as it can and does the weight work where 1F1B would sit idle,
  under the same bound on held activations as 1F1B. Same gradients, bit for bit.
- InferenceSchedule: forwards only.
"""

from __future__ import annotations

import abc
import functools


class PipeInstruction:
    """One thing a stage does; its keyword arguments are attributes."""

    def __init__(self, **kwargs) -> None:
        self.name = type(self).__name__
        self.kwargs = kwargs
        for key, value in kwargs.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.kwargs == other.kwargs

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.kwargs.items()))))


class OptimizerStep(PipeInstruction):
    """Step the optimizer (and the LR schedule) with the batch's gradients."""


class ReduceGrads(PipeInstruction):
    """Average gradients over the data-parallel ranks of this stage."""


class ReduceTiedGrads(PipeInstruction):
    """Sum tied weights' gradients over the stages that share them."""


class BufferOpInstruction(PipeInstruction):
    """An instruction about one micro-batch."""

    def __init__(self, micro_batch: int, **kwargs) -> None:
        super().__init__(micro_batch=micro_batch, **kwargs)


class LoadMicroBatch(BufferOpInstruction):
    """First stage: the micro-batch's inputs; last stage: its labels (from the data iterator)."""


class ForwardPass(BufferOpInstruction):
    pass


class BackwardPass(BufferOpInstruction):
    """Backward through the stage for one micro-batch: input and weight gradients."""


class BackwardInput(BufferOpInstruction):
    """The input half of a backward: the gradients of the stage's inputs (and between its layers)."""


class BackwardWeight(BufferOpInstruction):
    """The weight half of a backward: parameters' gradients, accumulated."""


class SendActivation(BufferOpInstruction):
    pass


class RecvActivation(BufferOpInstruction):
    pass


class SendGrad(BufferOpInstruction):
    pass


class RecvGrad(BufferOpInstruction):
    pass


COMMUNICATION = (SendActivation, RecvActivation, SendGrad, RecvGrad)


class PipeSchedule(abc.ABC):
    """The instructions of one batch for stage `stage_id` of `stages`; subclasses say the order."""

    def __init__(self, micro_batches: int, stages: int, stage_id: int) -> None:
        if micro_batches < 1:
            raise ValueError(f"a pipeline schedule needs at least one micro-batch, got {micro_batches}")
        if not 0 <= stage_id < stages:
            raise ValueError(f"stage_id {stage_id} is not a stage of {stages}")
        self.micro_batches, self.stages, self.stage_id = micro_batches, stages, stage_id
        self.prev_stage, self.next_stage = stage_id - 1, stage_id + 1

    @property
    def is_first_stage(self) -> bool:
        return self.stage_id == 0

    @property
    def is_last_stage(self) -> bool:
        return self.stage_id == self.stages - 1

    @property
    def num_micro_batches(self) -> int:
        return self.micro_batches

    @abc.abstractmethod
    def steps(self):
        """Yields the steps in order, each a list of instructions."""

    def __iter__(self):
        return self.steps()

    def instructions(self) -> list[PipeInstruction]:
        return [instruction for step in self.steps() for instruction in step]

    def __str__(self) -> str:
        title = f"{type(self).__name__}(micro_batches={self.micro_batches}, stages={self.stages}, stage_id={self.stage_id})"
        lines = [title] + [f"  {n}: " + " ".join(map(repr, step)) for n, step in enumerate(self.steps())]
        return "\n".join(lines)

    def _forward(self, micro_batch: int) -> list[PipeInstruction]:
        step = [] if self.is_first_stage else [RecvActivation(micro_batch)]
        if self.is_first_stage or self.is_last_stage:
            step.append(LoadMicroBatch(micro_batch))
        step.append(ForwardPass(micro_batch))
        if not self.is_last_stage:
            step.append(SendActivation(micro_batch))
        return step

    def _backward(self, micro_batch: int, kind=BackwardPass) -> list[PipeInstruction]:
        step = [] if self.is_last_stage else [RecvGrad(micro_batch)]
        step.append(kind(micro_batch))
        if not self.is_first_stage:
            step.append(SendGrad(micro_batch))
        return step

    def _finish(self) -> list[PipeInstruction]:
        return [ReduceTiedGrads(), ReduceGrads(), OptimizerStep()]


class InferenceSchedule(PipeSchedule):
    """Every micro-batch forward through the stage, in order."""

    def steps(self):
        for micro_batch in range(self.micro_batches):
            yield self._forward(micro_batch)


class TrainSchedule(PipeSchedule):
    """1F1B: warm up with p - s - 1 forwards, alternate one forward and one backward, then
    drain the remaining backwards; then the gradient reductions and the optimizer step."""

    def steps(self):
        warmup = min(self.stages - self.stage_id - 1, self.micro_batches)
        for micro_batch in range(warmup):
            yield self._forward(micro_batch)
        for micro_batch in range(self.micro_batches - warmup):
            yield self._forward(micro_batch + warmup)
            yield self._backward(micro_batch)
        for micro_batch in range(self.micro_batches - warmup, self.micro_batches):
            yield self._backward(micro_batch)
        yield self._finish()

    def num_pipe_buffers(self) -> int:
        """Micro-batches whose activations this stage holds at most."""
        return min(self.stages - self.stage_id, self.micro_batches)


class ZeroBubbleSchedule(PipeSchedule):
    """ZB-H1. The order comes from simulating the whole pipeline with unit-cost forward,
    input-backward and weight-backward passes: whenever a stage is free it runs a backward
    whose gradient has arrived, else the next forward, else its oldest pending weight pass.
    A forward waits while the stage holds p micro-batches (from forward to weight pass: the
    most 1F1B holds on any stage, its first) or p - s awaiting their backward (1F1B's
    bound). Simulated makespan: 3m + p - 1 + O(1) unit passes against 1F1B's 3m + 3(p - 1)."""

    def steps(self):
        for kind, micro_batch in zero_bubble_orders(self.micro_batches, self.stages)[self.stage_id]:
            if kind == "F":
                yield self._forward(micro_batch)
            elif kind == "B":
                yield self._backward(micro_batch, BackwardInput)
            else:
                yield [BackwardWeight(micro_batch)]
        yield self._finish()

    def num_pipe_buffers(self) -> int:
        return min(self.stages, self.micro_batches)


@functools.lru_cache(maxsize=64)
def zero_bubble_orders(micro_batches: int, stages: int) -> tuple[tuple[tuple[str, int], ...], ...]:
    """Per stage, the ("F" | "B" | "W", micro-batch) order of the simulated ZB-H1 pipeline
    (simulated once per shape: every batch of a run asks again)."""
    never = float("inf")
    forward_end = [[never] * micro_batches for _ in range(stages)]
    backward_end = [[never] * micro_batches for _ in range(stages)]
    orders: list[list[tuple[str, int]]] = [[] for _ in range(stages)]
    forwards, backwards, weights, free_at = [0] * stages, [0] * stages, [0] * stages, [0] * stages
    time = 0
    while any(w < micro_batches for w in weights):
        for s in range(stages):
            if free_at[s] > time:
                continue
            b, f = backwards[s], forwards[s]
            gradient_ready = b < f and (s == stages - 1 or backward_end[s + 1][b] <= time)
            if gradient_ready and forward_end[s][b] <= time:
                orders[s].append(("B", b))
                backward_end[s][b] = time + 1
                backwards[s] += 1
            elif (f < micro_batches and f - weights[s] < stages and f - b < stages - s
                  and (s == 0 or forward_end[s - 1][f] <= time)):
                orders[s].append(("F", f))
                forward_end[s][f] = time + 1
                forwards[s] += 1
            elif weights[s] < backwards[s]:
                orders[s].append(("W", weights[s]))
                weights[s] += 1
            else:
                continue
            free_at[s] = time + 1
        time += 1
    return tuple(tuple(order) for order in orders)
