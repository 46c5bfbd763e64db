"""communication_data_type and data_types.grad_accum_dtype fp32 for a bf16 model: the
gradient of a 16-micro-batch step, summed across ranks and micro-batches in fp32, lands
measurably closer to an fp32 run's (same bf16-representable weights, same data) than the
bf16 sums do, at ZeRO stages 1-3."""

import pytest
import torch

import deepspeed_ext as deepspeed
from deepspeed_ext.utils.tensor_fragment import safe_get_full_grad
from tests.ranks import run_ranks
from tests.runtime.zero import models

ACCUMULATION = 16


def accumulated_gradient(stage: int, bf16: bool, fp32_sums: bool) -> torch.Tensor:
    """Every trainable param's gradient at the first step boundary, averaged over the ranks."""
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": ACCUMULATION,
              "optimizer": {"type": "SGD", "params": {"lr": 0.05}},
              "zero_optimization": {"stage": stage, "reduce_bucket_size": 256}}
    if bf16:
        config["bf16"] = {"enabled": True}
    if fp32_sums:
        config.update({"communication_data_type": "fp32", "data_types": {"grad_accum_dtype": "fp32"}})
    model = models.make_model()
    with torch.no_grad():  # weights both precisions hold exactly: only the gradients' arithmetic differs
        for param in model.parameters():
            param.copy_(param.to(torch.bfloat16).float())
    engine = deepspeed.initialize(model=model, config=config)[0]
    dtype = torch.bfloat16 if bf16 else torch.float32
    for micro, (x, y) in enumerate(models.batches(ACCUMULATION, 2, seed=20 + engine.global_rank)):
        engine.backward(models.loss_of(engine, x.to(dtype), y.to(dtype), 0))
        if micro < ACCUMULATION - 1:
            engine.step()
    return torch.cat([safe_get_full_grad(p).float().flatten() for p in engine.module.parameters() if p.requires_grad])


def relative_errors(stage: int) -> tuple[float, float]:
    """(bf16 sums, fp32 sums): each bf16 run's gradient error relative to the fp32 run's."""
    reference = accumulated_gradient(stage, bf16=False, fp32_sums=False)
    return tuple(((accumulated_gradient(stage, True, fp32_sums) - reference).norm() / reference.norm()).item()
                 for fp32_sums in (False, True))


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_fp32_gradient_sums_are_closer_to_fp32_training(stage):
    for bf16_sums, fp32_sums in run_ranks(relative_errors, 2, stage):
        assert fp32_sums < 0.8 * bf16_sums, (fp32_sums, bf16_sums)
