"""ZeRO's configuration errors and single-process behaviour: optimizers it cannot shard,
offload needing the CPU optimizers, a client optimizer
object, and fp16 overflow skipping the step."""

from __future__ import annotations

import pytest
import torch

import deepspeed_ext as deepspeed
from deepspeed_ext import ConfigError
from tests.runtime.zero.models import batches, loss_of, make_model

ADAM = {"type": "Adam", "params": {"lr": 0.01}}


def engine_for(zero: dict, client=None, **extra):
    """An engine on the test model; `client` is an optimizer class built on its params."""
    config = {"train_micro_batch_size_per_gpu": 4, "zero_optimization": zero, **extra}
    if client is None and "optimizer" not in extra:
        config["optimizer"] = ADAM
    model = make_model()
    engine, _, _, _ = deepspeed.initialize(model=model, config=config,
                                           optimizer=client(model.parameters()) if client else None)
    return engine


class SignSGD(torch.optim.Optimizer):
    def __init__(self, params, lr=0.01):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])


@pytest.mark.parametrize("zero,extra,message", [
    ({"stage": 2, "offload_param": {"device": "cpu"}}, {}, "offload_param needs stage 3"),
    ({"stage": 2, "zero_quantized_weights": True}, {}, r"zero_quantized_weights \(ZeRO\+\+\) needs stage 3"),
    ({"stage": 2, "zero_hpz_partition_size": 2}, {}, r"zero_hpz_partition_size \(ZeRO\+\+\) needs stage 3"),
    ({"stage": 3, "zero_hpz_partition_size": 2}, {}, r"zero_hpz_partition_size \(2\) must divide the number of ranks \(1\)"),
    ({"stage": 1}, {"optimizer": {"type": "Adafactor"}}, "cannot shard Adafactor"),
    ({"stage": 2, "offload_optimizer": {"device": "cpu"}},
     {"optimizer": {"type": "Adam", "params": {"torch_adam": True}}}, "zero_force_ds_cpu_optimizer"),
])
def test_bad_combinations_name_the_key(zero, extra, message):
    with pytest.raises(ConfigError, match=message):
        engine_for(zero, **extra)


def test_shape_dependent_and_untested_client_optimizers():
    with pytest.raises(ConfigError, match="cannot shard LBFGS"):
        engine_for({"stage": 2}, client=torch.optim.LBFGS)
    with pytest.raises(ConfigError, match="zero_allow_untested_optimizer"):
        engine_for({"stage": 2}, client=SignSGD)
    engine = engine_for({"stage": 2}, client=SignSGD, zero_allow_untested_optimizer=True)
    assert isinstance(engine.basic_optimizer, SignSGD)


def test_client_optimizer_object_steps_the_shards():
    model = make_model()
    client = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=client, config={
        "train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 2}})
    assert optimizer.param_groups[0]["lr"] == 0.05 and optimizer.param_groups[0]["momentum"] == 0.9
    before = engine.module.hidden.weight.detach().clone()
    x, y = batches(1, 4)[0]
    engine.backward(loss_of(engine, x, y, 0))
    engine.step()
    assert not torch.equal(before, engine.module.hidden.weight)
    assert engine.basic_optimizer is client and client.param_groups[0]["params"][0] is engine.zero.groups[0].master


def test_fp16_overflow_skips_the_step_under_zero():
    engine = engine_for({"stage": 2}, fp16={"enabled": True, "initial_scale_power": 8, "hysteresis": 1})
    before = [p.detach().clone() for p in engine.module.parameters()]
    x, y = batches(1, 4)[0]
    loss = loss_of(engine, x, y, 0)
    engine.backward(loss * float("inf"))
    engine.step()
    assert not engine.was_step_applied() and engine.skipped_steps == 1
    assert engine.loss_scaler.scale == 2**7
    assert all(torch.equal(a, b) for a, b in zip(before, engine.module.parameters()))
    engine.backward(loss_of(engine, x, y, 0))
    engine.step()
    assert engine.was_step_applied()
