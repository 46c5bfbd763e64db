"""ZeRO-Infinity offload to NVMe: with the optimizer (and at stage 3 the param shards) in files
the params after training are bit for bit CPU offload's (same sub-groups, fp32, clipping, on 2
ranks, stages 1-3, every buffer_count), a checkpoint carries the swapped states and resumes
exactly, edits to stage-3 params reach the swapped masters and shards, and the process's
peak memory drops by about the swapped bytes."""

from __future__ import annotations

import os

import pytest
import torch

import deepspeed_ext as deepspeed
from deepspeed_ext import ConfigError
from tests.memory import MEMORY_ENV, PeakAnonymousMemory
from tests.ranks import run_ranks
from tests.runtime.zero.models import batches, loss_of, make_model


def nvme_config(stage: int, device: str, buffer_count: int, folder: str, micro: int, param_device: str = "none") -> dict:
    offload = {"device": device, "buffer_count": buffer_count, "nvme_path": folder or None}
    zero = {"stage": stage, "sub_group_size": 700, "offload_optimizer": offload,
            "stage3_param_persistence_threshold": 10}
    if param_device != "none":
        zero["offload_param"] = {"device": param_device, "nvme_path": folder or None, "max_in_cpu": 0}
    return {"train_micro_batch_size_per_gpu": micro, "gradient_clipping": 0.5,
            "optimizer": {"type": "AdamW", "params": {"lr": 0.002, "weight_decay": 0.01}},
            "aio": {"block_size": 4096, "queue_depth": 4, "thread_count": 2}, "zero_optimization": zero}


def train(stage: int, device: str, buffer_count: int, folder: str, rank: int, world: int, steps: int = 4,
          engine=None, param_device: str = "none") -> dict:
    """Trains the awkward model; returns the whole params and the losses."""
    config = nvme_config(stage, device, buffer_count, folder, 6 // world, param_device)
    if engine is None:
        engine, _, _, _ = deepspeed.initialize(model=make_model(), config=config)
    share = 6 // world
    losses = []
    for step, (x, y) in enumerate(batches(steps, 6)):
        loss = loss_of(engine, x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share], step)
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    params = dict(engine.module.named_parameters())
    with deepspeed.zero.GatheredParameters(list(params.values())):
        whole = {name: p.detach().flatten().tolist() for name, p in params.items()}
    return {"params": whole, "losses": losses, "memory": engine.memory_breakdown()}


def train_on_rank(stage: int, device: str, buffer_count: int, folder: str, param_device: str) -> dict:
    return train(stage, device, buffer_count, folder, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                 param_device=param_device)


@pytest.mark.parametrize("stage,buffer_count,params_too", [(1, 4, False), (2, 1, False), (2, 2, False),
                                                         (3, 4, False), (3, 3, True)])
def test_nvme_offload_trains_exactly_like_cpu_offload(tmp_path, stage, buffer_count, params_too):
    param_cpu, param_nvme = ("cpu", "nvme") if params_too else ("none", "none")
    cpu = run_ranks(train_on_rank, 2, stage, "cpu", 4, "", param_cpu)
    nvme = run_ranks(train_on_rank, 2, stage, "nvme", buffer_count, str(tmp_path), param_nvme)
    for on_cpu, on_nvme in zip(cpu, nvme):
        assert on_nvme["params"] == on_cpu["params"]
        assert on_nvme["memory"]["master_weights"] == 0 and on_nvme["memory"]["optimizer_states"] == 0
        # master + exp_avg + exp_avg_sq of every sub-group in files (and the fp32 model's shards)
        swapped_shards = on_cpu["memory"]["master_weights"] if params_too else 0
        assert on_nvme["memory"]["swapped_to_nvme"] == 3 * on_cpu["memory"]["master_weights"] + swapped_shards
    for kind in ["optimizer"] + (["params"] if params_too else []):
        assert sorted(p.name for p in (tmp_path / f"zero_stage_{stage}" / kind).iterdir()) == ["rank0", "rank1"]


@pytest.mark.parametrize("stage,param_device", [(2, "none"), (3, "nvme")])
def test_checkpoint_carries_the_swapped_states_and_resumes(tmp_path, stage, param_device):
    config = nvme_config(stage, "nvme", 4, str(tmp_path / "swap"), 6, param_device)
    engine, _, _, _ = deepspeed.initialize(model=make_model(), config=config)
    train(stage, "nvme", 4, "", 0, 1, steps=2, engine=engine)
    engine.save_checkpoint(tmp_path / "ckpt", tag="t")
    continued = train(stage, "nvme", 4, "", 0, 1, steps=3, engine=engine)
    saved = torch.load(tmp_path / "ckpt" / "t" / "zero_pp_rank_0_mp_rank_00_optim_states.pt", weights_only=False)
    states = saved["optimizer_state_dict"]["base_optimizer_state"]["state"]
    assert len(states) > 1 and all(s["exp_avg"].abs().sum() > 0 for s in states.values())
    resumed_engine, _, _, _ = deepspeed.initialize(model=make_model(seed=5), config=nvme_config(
        stage, "nvme", 4, str(tmp_path / "swap2"), 6, param_device))
    resumed_engine.load_checkpoint(tmp_path / "ckpt", tag="t")
    resumed = train(stage, "nvme", 4, "", 0, 1, steps=3, engine=resumed_engine)
    assert resumed["losses"] == continued["losses"] and resumed["params"] == continued["params"]


def test_stage3_edits_reach_the_swapped_masters_and_shards(tmp_path):
    engine, _, _, _ = deepspeed.initialize(model=make_model(), config=nvme_config(3, "nvme", 4, str(tmp_path), 6,
                                                                                   "nvme"))
    weight = engine.module.hidden.weight
    with deepspeed.zero.GatheredParameters([weight], modifier_rank=0):
        weight.data.fill_(0.25)
    with engine.zero.resident():
        masters = torch.cat([g.master.detach() for g in engine.zero.groups])
        group = next(g for g in engine.zero.groups if any(p is weight for p in g.params))
        index = next(i for i, p in enumerate(group.params) if p is weight)
        offset, size = group.layout.shard_offsets[index], weight.ds_numel
        assert torch.all(group.master.detach()[offset:offset + size] == 0.25)
    assert masters.numel() > 0 and engine.memory_breakdown()["master_weights"] == 0
    assert weight.ds_tensor.is_meta
    with deepspeed.zero.GatheredParameters([weight]):
        assert torch.all(weight == 0.25)


def test_missing_path_names_the_key(tmp_path):
    base = {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "Adam", "params": {"lr": 0.01}}}
    with pytest.raises(ConfigError, match=r"offload_optimizer.nvme_path is required"):
        deepspeed.initialize(model=make_model(), config={**base, "zero_optimization": {
            "stage": 2, "offload_optimizer": {"device": "nvme"}}})
    with pytest.raises(ConfigError, match=r"offload_param.nvme_path is required"):
        deepspeed.initialize(model=make_model(), config={**base, "zero_optimization": {
            "stage": 3, "offload_param": {"device": "nvme"}}})


def peak_on_rank(device: str, folder: str) -> dict:
    """Two ZeRO-2 steps of a 16.8M-param model with the optimizer offloaded to device; the
    peak anonymous RSS during the steps and the bytes in swap files."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(16)])
    offload = {"device": device, "nvme_path": folder} if device == "nvme" else {"device": device}
    engine, _, _, _ = deepspeed.initialize(model=model, config={
        "train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "Adam", "params": {"lr": 1e-4}},
        "zero_optimization": {"stage": 2, "sub_group_size": 2_000_000, "offload_optimizer": offload}})
    with PeakAnonymousMemory() as peak:
        for _ in range(2):
            engine.backward(engine(torch.randn(4, 1024)).square().mean())
            engine.step()
    return {"peak": peak.bytes, "swapped": engine.memory_breakdown().get("swapped_to_nvme", 0)}


def test_peak_memory_drops_by_the_swapped_bytes(tmp_path):
    (cpu,), (nvme,) = (run_ranks(peak_on_rank, 1, device, str(tmp_path), extra_env=MEMORY_ENV)
                       for device in ("cpu", "nvme"))
    saved = cpu["peak"] - nvme["peak"]
    print(f"peak anonymous RSS while training: CPU offload {cpu['peak'] / 2**20:.0f} MiB, NVMe offload {nvme['peak'] / 2**20:.0f} MiB; "
          f"{saved / 2**20:.0f} MiB less, {nvme['swapped'] / 2**20:.0f} MiB in swap files")
    # The peak of anonymous memory during the training steps: set-up (where both hold every
    # state once) and file-backed pages (shared libraries, which vary with the page cache) are
    # left out.
    assert saved > 0.5 * nvme["swapped"]
