"""ZeRO-3 parameters on 2 gloo ranks: zero.Init partitions as modules are built (with rank
0's values), GatheredParameters (edits kept only with modifier_rank), external params,
persistent small params, prefetching in the recorded order, and a model built under Init
training like one converted by the engine."""

from __future__ import annotations

import torch

import deepspeed_ext as deepspeed
from tests.ranks import run_ranks

CHECKS = """
import json, os, torch
import deepspeed_ext as deepspeed
from deepspeed_ext.zero import GatheredParameters, Init, ZeroParamStatus
from deepspeed_ext.runtime.zero import partitioned_params
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

class UsesOther(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Linear(4, 4)
        self.other = torch.nn.Linear(4, 4)
    def forward(self, x):
        return self.inner(x) + x @ self.other.weight  # other's weight used outside other's forward
with Init():
    external = UsesOther()
deepspeed.zero.register_external_parameter(external, external.other.weight)
results["external"] = external(torch.ones(2, 4)).shape == torch.Size([2, 4])

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
for step in range(3):
    started.clear()
    loss = engine(x).pow(2).mean()
    engine.backward(loss)
    engine.step()
    losses.append(loss.item())
results["prefetched_after_first_step"] = any(started)
results["losses_fall"] = losses[2] < losses[0]
results["all_released"] = all(p.numel() == 0 for p in model.parameters() if not p.ds_persist)
print(json.dumps(results))
"""


def test_zero3_params_on_two_ranks():
    ranks = run_ranks(CHECKS, 2)
    assert ranks[0]["gathered"] == ranks[1]["gathered"]
    for result in ranks:
        assert all(result["attributes"]), result["attributes"]
        assert result["persistent_bias"] == [True, True]
        assert result["released"]
        assert result["edited"] == [float(v) for v in range(35)]
        assert result["external"]
        assert result["prefetched_after_first_step"]
        assert result["losses_fall"]
        assert result["all_released"]
    torch.manual_seed(100)  # rank 0's values
    reference = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    assert ranks[0]["gathered"] == [p.detach().flatten().tolist() for p in reference.parameters()]


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
