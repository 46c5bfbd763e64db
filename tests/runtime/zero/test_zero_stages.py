"""ZeRO stages 1-3 (with and without CPU offload) train exactly like stage 0: same params
after several steps with accumulation, clipping and the awkward model of models.py, on 2 and
3 gloo ranks (3 makes every partition uneven)."""

from __future__ import annotations

import functools
import os

import pytest
import torch

import deepspeed_ext as deepspeed
from tests.ranks import run_ranks
from tests.runtime.zero.models import batches, loss_of, make_model

STEPS, GLOBAL_BATCH = 4, 12


def zero_config(stage: int, accumulation: int, world: int, offload: bool = False, dtype: str = "fp32") -> dict:
    zero = {"stage": stage, "reduce_bucket_size": 256, "allgather_bucket_size": 300,
            "stage3_param_persistence_threshold": 10, "stage3_prefetch_bucket_size": 600}
    if offload:
        zero["offload_optimizer"] = {"device": "cpu"}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu"}
    config = {"train_micro_batch_size_per_gpu": GLOBAL_BATCH // (world * accumulation),
              "gradient_accumulation_steps": accumulation, "gradient_clipping": 0.5,
              "optimizer": {"type": "AdamW", "params": {"lr": 0.002, "weight_decay": 0.01}},
              "zero_optimization": zero}
    if dtype != "fp32":
        config[dtype] = {"enabled": True}
    return config


def train_on_rank(stage: int, accumulation: int, offload: bool, dtype: str) -> dict:
    """One rank's share of STEPS global batches; returns the full params afterwards."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    config = zero_config(stage, accumulation, world, offload, dtype)
    engine, _, _, _ = deepspeed.initialize(model=make_model(), config=config)
    micro = config["train_micro_batch_size_per_gpu"]
    share = GLOBAL_BATCH // world
    for step, (x, y) in enumerate(batches(STEPS, GLOBAL_BATCH)):
        for start in range(rank * share, (rank + 1) * share, micro):
            engine.backward(loss_of(engine, x[start:start + micro], y[start:start + micro], step))
            if stage == 0 and engine.is_gradient_accumulation_boundary():
                zero_grads_for_unused(engine.module)
            engine.step()
    return full_params(engine.module)


def zero_grads_for_unused(module) -> None:
    """Under ZeRO (as in DeepSpeed) a param unused in a step is stepped with a zero gradient
    (its Adam moments decay); a torch optimizer would skip it. Give stage 0 the same."""
    for param in module.parameters():
        if param.requires_grad and param.grad is None:
            param.grad = torch.zeros_like(param)


def full_params(module) -> dict:
    """name -> flat list of values, gathering ZeRO-3 params."""
    params = dict(module.named_parameters())
    with deepspeed.zero.GatheredParameters(list(params.values())):
        return {name: p.detach().float().flatten().tolist() for name, p in params.items()}


@functools.cache
def stage0_reference(world: int, accumulation: int, dtype: str = "fp32") -> dict:
    """Stage 0 on the same ranks and micro-batches: the same arithmetic, nothing sharded."""
    return run_ranks(train_on_rank, world, 0, accumulation, False, dtype)[0]


def assert_same_params(ranks: list[dict], reference: dict, atol: float) -> None:
    for other in ranks[1:]:
        assert other == ranks[0]
    moved = 0
    initial = dict(make_model().named_parameters())
    for name, values in reference.items():
        torch.testing.assert_close(torch.tensor(ranks[0][name]), torch.tensor(values), rtol=0, atol=atol, msg=name)
        moved += not torch.equal(torch.tensor(values), initial[name].detach().flatten())
    assert moved == len(reference) - 2  # all but the frozen layer's weight and bias trained


@pytest.mark.parametrize("stage,world,accumulation,offload", [
    (1, 2, 2, False), (2, 2, 2, False), (3, 2, 2, False),
    (1, 3, 1, True), (2, 3, 2, True), (3, 3, 2, True),
])
def test_stage_equals_stage0_in_fp32(stage, world, accumulation, offload):
    ranks = run_ranks(train_on_rank, world, stage, accumulation, offload, "fp32")
    assert_same_params(ranks, stage0_reference(world, accumulation), atol=1e-5)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_stage_equals_stage0_in_bf16(stage):
    """bf16: gradients are summed in bf16 in a different order than stage 0's, so params
    agree to a few bf16 steps (2**-8 relative), not bit for bit."""
    ranks = run_ranks(train_on_rank, 2, stage, 2, False, "bf16")
    reference = stage0_reference(2, 2, "bf16")
    for name, values in reference.items():
        torch.testing.assert_close(torch.tensor(ranks[0][name]), torch.tensor(values), rtol=0.02, atol=0.01, msg=name)
