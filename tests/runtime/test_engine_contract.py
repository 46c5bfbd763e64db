"""The engine API Hugging Face's Trainer and Accelerate call: the caller-set accumulation
boundary, backward without the accumulation divisor, engine.config as a dict, no_sync, the
getters, 16-bit state dicts at ZeRO-3, teardown, optimizer.overflow, evaluation engines, and
per-param access to the fp32 master / gradient / optimizer state at every ZeRO stage."""

import functools

import pytest
import torch

import deepspeed_ext as deepspeed
from deepspeed_ext.utils import (
    safe_get_full_fp32_param,
    safe_get_full_grad,
    safe_get_full_optimizer_state,
    safe_get_local_fp32_param,
    safe_set_full_fp32_param,
    safe_set_full_optimizer_state,
    safe_set_local_fp32_param,
)
from tests.ranks import run_ranks
from tests.runtime.test_engine import ADAM, batches, make_model, mse
from tests.runtime.zero import models


def test_caller_sets_the_boundary_and_the_loss_divisor():
    """Accelerate's loop: boundary said by the caller, step() called only there."""
    data = batches(4, 4)
    config = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2, "optimizer": ADAM}
    counted, _, _, _ = deepspeed.initialize(model=make_model(), config=config)
    told, _, _, _ = deepspeed.initialize(model=make_model(), config=config)
    for index, (x, y) in enumerate(data):
        counted.backward(mse(counted, x, y))
        counted.step()
        told.set_gradient_accumulation_boundary(is_boundary=index % 2 == 1)
        told.backward(mse(told, x, y))
        if index % 2 == 1:
            told.step()
    for a, b in zip(counted.module.parameters(), told.module.parameters()):
        assert torch.equal(a, b)
    assert told.global_steps == 2
    # scale_wrt_gas=False: the caller has divided already
    halved, _, _, _ = deepspeed.initialize(model=make_model(), config=config)
    x, y = data[0]
    halved.backward(mse(halved, x, y) / 2, scale_wrt_gas=False)
    counted_grads = deepspeed.initialize(model=make_model(), config=config)[0]
    counted_grads.backward(mse(counted_grads, x, y))
    for a, b in zip(halved.module.parameters(), counted_grads.module.parameters()):
        assert torch.allclose(a.grad, b.grad)


def test_config_dict_getters_and_state_dict():
    model = make_model()
    model[0].requires_grad_(False)
    config = {"train_batch_size": 4, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "betas": [0.8, 0.9]}},
              "steps_per_print": "auto"}
    engine, optimizer, _, _ = deepspeed.initialize(model=model, config=config)
    assert engine.config == config and isinstance(engine.config, dict)  # DeepSpeed's: the dict given
    assert engine._config.steps_per_print == 10  # the checked object stays reachable
    assert engine.get_mom() == [(0.8, 0.9)]
    assert engine.get_type() == "DeepSpeedCPUAdam"
    assert set(engine.module_state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert set(engine.module_state_dict(exclude_frozen_parameters=True)) == {"2.weight", "2.bias"}
    assert optimizer.overflow is False and engine.zero_gather_16bit_weights_on_model_save() is False
    with pytest.raises(ValueError, match="needs ZeRO stage 3"):
        engine._zero3_consolidated_16bit_state_dict()


def test_fp16_overflow_sets_optimizer_overflow():
    engine, optimizer, _, _ = deepspeed.initialize(
        model=make_model(), config={"train_batch_size": 2, "optimizer": ADAM,
                                    "fp16": {"enabled": True, "initial_scale_power": 4}})
    x, y = batches(1, 2)[0]
    engine.backward(mse(engine, x.half(), y.half()) * float("inf"))
    engine.step()
    assert optimizer.overflow is True and not engine.was_step_applied()
    engine.backward(mse(engine, x.half(), y.half()))
    engine.step()
    assert optimizer.overflow is False


def no_sync_on_ranks(stage: int):
    """Two micro-batches, the first inside no_sync: the step equals one without no_sync."""
    deepspeed.init_distributed(verbose=False)
    data = batches(2, 4, seed=3 + deepspeed.comm.get_rank())
    config = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2, "optimizer": ADAM,
              "zero_optimization": {"stage": stage}}
    engine, _, _, _ = deepspeed.initialize(model=make_model(), config=config)
    if stage >= 2:
        with pytest.raises(RuntimeError, match="cannot be used at ZeRO stage"), engine.no_sync():
            pass
        return None
    with engine.no_sync():  # as Accelerate uses it below stage 2: it says where the boundary is
        engine.set_gradient_accumulation_boundary(False)
        engine.backward(mse(engine, *data[0]))
        with pytest.raises(RuntimeError, match="inside no_sync"):
            engine.step()
    engine.set_gradient_accumulation_boundary(True)
    engine.backward(mse(engine, *data[1]))
    engine.step()
    reference, _, _, _ = deepspeed.initialize(model=make_model(), config=config)
    for x, y in data:
        reference.backward(mse(reference, x, y))
        reference.step()
    return all(torch.equal(a, b) for a, b in zip(engine.module.parameters(), reference.module.parameters()))


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_no_sync(stage):
    assert run_ranks(no_sync_on_ranks, 2, stage) == [stage < 2 or None] * 2


def evaluation_and_teardown_on_ranks():
    """ZeRO-3 without an optimizer (HF's evaluate): forward on the partitioned model equals the
    plain model's; the 16-bit state dict is the whole model on rank 0; destroy unhooks."""
    config = {"train_micro_batch_size_per_gpu": 2,
              "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
              "scheduler": {"type": "WarmupLR"}}  # HF leaves the scheduler section in; nothing to schedule
    plain = models.make_model()
    engine, optimizer, _, scheduler = deepspeed.initialize(model=models.make_model(), config=config)
    x, _ = models.batches(1, 2)[0]
    same_output = torch.equal(engine(x), plain(x))
    state = engine._zero3_consolidated_16bit_state_dict()
    whole = state is None if deepspeed.comm.get_rank() else all(torch.equal(state[k], v)
                                                               for k, v in plain.state_dict().items())
    engine.empty_partition_cache()
    released = all(p.numel() == 0 for p in engine.module.parameters())
    shard_bytes = sum(p.ds_tensor.numel() * 4 for p in engine.module.parameters())
    assert engine.memory_breakdown() == {"params": shard_bytes, "gradients": 0, "master_weights": 0,
                                         "optimizer_states": 0, "total": shard_bytes}
    engine.destroy()
    hooks = sum(len(m._forward_pre_hooks) for m in engine.module.modules())
    return optimizer, scheduler, same_output, whole, released, hooks


def test_evaluation_engine_at_zero3_and_teardown():
    for result in run_ranks(evaluation_and_teardown_on_ranks, 2):
        assert result == (None, None, True, True, True, 0)


def per_param_state_on_ranks(stage: int, offload: bool):
    """Two steps of Awkward, then each param's full fp32 value, its gradient of a third
    backward and its exp_avg, read through safe_get_full_*; then values written back."""
    zero = {"stage": stage, "reduce_bucket_size": 256, "allgather_bucket_size": 256,
            "stage3_param_persistence_threshold": 0}
    if offload:
        zero["offload_optimizer"] = {"device": "cpu"}
    engine, _, _, _ = deepspeed.initialize(model=models.make_model(), config={
        "train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "Adam", "params": {"lr": 1e-2}},
        "zero_optimization": zero})
    data = models.batches(3, 2, seed=5 + deepspeed.comm.get_rank())
    for x, y in data[:2]:  # step 1 of loss_of: every param gets a gradient (the side branch too)
        engine.backward(models.loss_of(engine, x, y, 1))
        engine.step()
    engine.backward(models.loss_of(engine, *data[2], 1))  # at the boundary: the reduced gradient
    named = [(n, p) for n, p in engine.module.named_parameters() if p.requires_grad]
    read = {n: (safe_get_full_fp32_param(p), safe_get_full_grad(p), safe_get_full_optimizer_state(p, "exp_avg"))
            for n, p in named}
    frozen = safe_get_full_fp32_param(engine.module.frozen.weight)
    engine.step()
    hidden = engine.module.hidden.weight
    safe_set_full_fp32_param(hidden, torch.full((40, 40), 0.5))
    with deepspeed.zero.GatheredParameters([hidden]):
        model_sees = hidden.detach().clone()  # a full write reaches the model's copy at once
    safe_set_full_optimizer_state(hidden, torch.full((40, 40), 0.25), "exp_avg")
    local = safe_get_local_fp32_param(hidden)
    safe_set_local_fp32_param(hidden, local * 2)  # every rank doubles its own pieces: the whole param doubles
    written = (safe_get_full_fp32_param(hidden), safe_get_full_optimizer_state(hidden, "exp_avg"))
    return read, frozen, written, model_sees


@functools.cache
def stage0_reference():
    return run_ranks(per_param_state_on_ranks, 2, 0, False)[0]


@pytest.mark.parametrize(("stage", "offload"), [(1, False), (2, False), (3, False), (2, True), (3, True)])
def test_safe_get_and_set_full_state_at_every_stage(stage, offload):
    reference = stage0_reference()
    results = run_ranks(per_param_state_on_ranks, 2, stage, offload)
    for read, frozen, written, model_sees in results:
        assert frozen is None  # not trained by the engine
        for name, (fp32, grad, exp_avg) in read.items():
            ref_fp32, ref_grad, ref_exp_avg = reference[0][name]
            assert fp32.shape == ref_fp32.shape, name
            assert torch.allclose(fp32, ref_fp32, atol=1e-6), name
            assert torch.allclose(grad, ref_grad, atol=1e-6), name
            assert torch.allclose(exp_avg, ref_exp_avg, atol=1e-6), name
        assert torch.equal(written[0], torch.full((40, 40), 1.0))
        assert torch.equal(written[1], torch.full((40, 40), 0.25))
        assert torch.equal(model_sees, torch.full((40, 40), 0.5))
