"""ZeRO-3 parameters on 2 gloo ranks: zero.Init partitions as modules are built (with rank
0's values), GatheredParameters (edits kept only with modifier_rank), external params (trained
through an engine, and failing without the registration), persistent small params,
prefetching in the recorded order, and a model built under Init training like one converted
by the engine."""

from __future__ import annotations

import os

import pytest
import torch

import deepspeed_ext as deepspeed
from deepspeed_ext.runtime.zero import partitioned_params
from deepspeed_ext.zero import GatheredParameters, Init, ZeroParamStatus
from tests.ranks import RankFailed, run_ranks


def checks_on_rank() -> dict:
    rank = int(os.environ["RANK"])
    results = {}
    torch.manual_seed(100 + rank)  # different values per rank: Init must broadcast rank 0's
    with Init(config_dict_or_path={"zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 8}}):
        model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    weight = model[0].weight
    results["attributes"] = [weight.ds_shape == torch.Size([7, 5]), weight.ds_numel == 35,
                             weight.ds_tensor.numel() == 18, weight.numel() == 0,
                             weight.ds_status == ZeroParamStatus.NOT_AVAILABLE, isinstance(weight.ds_id, int)]
    results["persistent_bias"] = [model[2].bias.ds_persist, model[2].bias.numel() == 3]
    with GatheredParameters(list(model.parameters())):
        results["gathered"] = [p.detach().flatten().tolist() for p in model.parameters()]
    results["released"] = weight.numel() == 0

    with GatheredParameters(weight, modifier_rank=None):
        weight.data.fill_(5.0)  # discarded
    with GatheredParameters(weight, modifier_rank=1):
        if rank == 1:
            weight.data.copy_(torch.arange(35.0).view(7, 5))  # kept, on every rank
    with GatheredParameters(weight):
        results["edited"] = weight.detach().flatten().tolist()

    engine, _, _, _ = deepspeed.initialize(model=model, config={
        "train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "Adam", "params": {"lr": 0.01}},
        "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 8, "stage3_prefetch_bucket_size": 100}})
    started = []
    original = partitioned_params.gather

    def spy(params, async_op=False):
        started.append(async_op)
        return original(params, async_op)

    partitioned_params.gather = spy
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(3):
        started.clear()
        loss = engine(x).pow(2).mean()
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    results["prefetched_after_first_step"] = any(started)
    results["losses_fall"] = losses[2] < losses[0]
    results["all_released"] = all(p.numel() == 0 for p in model.parameters() if not p.ds_persist)
    return results


class UsesOther(torch.nn.Module):
    """Reads other.weight outside other's forward, so only a registration gets it gathered."""

    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Linear(4, 4)
        self.other = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.inner(x) + x @ self.other.weight


EXTERNAL_STEPS = 3


def external_param_on_rank(register: bool) -> dict:
    """Stage 3 with nothing persistent, so every param is gathered only by the engine's hooks."""
    zero = {"stage": 3, "stage3_param_persistence_threshold": 0}
    torch.manual_seed(0)
    with Init(config_dict_or_path={"zero_optimization": zero}):
        model = UsesOther()
    if register:
        deepspeed.zero.register_external_parameter(model, model.other.weight)
    engine, _, _, _ = deepspeed.initialize(model=model, config={
        "train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "Adam", "params": {"lr": 0.01}},
        "zero_optimization": zero})
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(EXTERNAL_STEPS):
        loss = engine(x).pow(2).mean()
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    with GatheredParameters(list(model.parameters())):
        return {"losses": losses, "params": [p.detach().clone() for p in model.parameters()]}


def test_zero3_params_on_two_ranks():
    ranks = run_ranks(checks_on_rank, 2)
    assert ranks[0]["gathered"] == ranks[1]["gathered"]
    for result in ranks:
        assert all(result["attributes"]), result["attributes"]
        assert result["persistent_bias"] == [True, True]
        assert result["released"]
        assert result["edited"] == [float(v) for v in range(35)]
        assert result["prefetched_after_first_step"]
        assert result["losses_fall"]
        assert result["all_released"]
    torch.manual_seed(100)  # rank 0's values
    reference = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    assert ranks[0]["gathered"] == [p.detach().flatten().tolist() for p in reference.parameters()]


def test_registered_external_param_trains_like_plain_torch():
    torch.manual_seed(0)
    reference = UsesOther()
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.01)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(EXTERNAL_STEPS):
        loss = reference(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    for result in run_ranks(external_param_on_rank, 2, True):
        torch.testing.assert_close(torch.tensor(result["losses"]), torch.tensor(losses))
        for got, expected in zip(result["params"], reference.parameters()):
            torch.testing.assert_close(got, expected.detach())


def test_unregistered_external_param_is_not_gathered():
    """Without the registration the engine never gathers other.weight: the forward sees its
    empty placeholder and fails (so the test above depends on the registration)."""
    with pytest.raises(RankFailed, match=r"in forward\n.*x @ self\.other\.weight"):
        run_ranks(external_param_on_rank, 2, False)


def test_init_disabled_and_single_process():
    with deepspeed.zero.Init(enabled=False):
        plain = torch.nn.Linear(3, 3)
    assert not hasattr(plain.weight, "ds_tensor")
    with deepspeed.zero.Init(config_dict_or_path={"zero_optimization": {"stage3_param_persistence_threshold": 0}}):
        layer = torch.nn.Linear(3, 3)
    assert layer.weight.ds_tensor.numel() == 9 and layer.weight.numel() == 0
    with deepspeed.zero.GatheredParameters(layer.weight):
        assert layer.weight.shape == (3, 3)
    assert not hasattr(torch.nn.Linear(2, 2).weight, "ds_tensor")  # outside the block, modules build as usual


def test_init_reads_its_config_through_the_schema():
    """HF Trainer hands zero.Init its "auto" template: "auto" is the default, as in initialize."""
    auto = {"zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": "auto",
                                  "stage3_prefetch_bucket_size": "auto", "offload_param": {"device": "auto"}},
            "bf16": {"enabled": "auto"}}
    with deepspeed.zero.Init(config_dict_or_path=auto):
        small = torch.nn.Linear(3, 3)
    assert small.weight.ds_persist and small.weight.ds_tensor.dtype == torch.float32  # threshold 100,000
    with deepspeed.zero.Init(config_dict_or_path={"bf16": {"enabled": True}}):
        assert torch.nn.Linear(3, 3).weight.ds_tensor.dtype == torch.bfloat16
    bad = {"zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": "many"}}
    with pytest.raises(deepspeed.ConfigError, match="stage3_param_persistence_threshold must be an integer"):
        deepspeed.zero.Init(config_dict_or_path=bad)
