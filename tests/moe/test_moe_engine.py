"""The engine with MoE models on 2 gloo ranks: expert gradients go to their expert-data-parallel
group, so ep_size 2 trains to the params ep_size 1 does (one rank holding every expert), at
ZeRO 0, 1 and 2, with clipping; the loss falls; checkpoints in DeepSpeed's MoE layout round
trip and load onto another ep_size."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

import deepspeed_ext
from tests.moe import models
from tests.ranks import run_ranks

STEPS = 6


def config(stage: int, clip: float = 0.0, precision: str | None = None) -> dict:
    half = {precision: {"enabled": True, **({"initial_scale_power": 8} if precision == "fp16" else {})}} \
        if precision else {}
    return {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1, "gradient_clipping": clip,
            "optimizer": {"type": "Adam", "params": {"lr": 1e-2}}, "zero_optimization": {"stage": stage},
            "steps_per_print": 1000, **half}


def full_state(engine, ep_size: int) -> dict:
    """The model's state with every expert (gathered over the expert-parallel group), global numbering."""
    state = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    marker = "moe.deepspeed_moe.experts.deepspeed_experts."
    local = {k: v for k, v in state.items() if k.startswith(marker)}
    gathered = [None] * ep_size
    group = deepspeed_ext.utils.groups._get_expert_parallel_group(f"ep_size_{ep_size}")
    dist.all_gather_object(gathered, local, group=group)
    shared = {k: v for k, v in state.items() if not k.startswith(marker)}
    per_rank = models.EXPERTS // ep_size
    for ep_rank, experts in enumerate(gathered):
        for key, value in experts.items():
            index, rest = key[len(marker):].split(".", 1)
            shared[f"{marker}{ep_rank * per_rank + int(index)}.{rest}"] = value
    return shared


def train_on_rank(ep_size: int, stage: int, clip: float, save_dir=None, load_dir=None, load_ep=None, precision=None):
    rank = int(os.environ["RANK"])
    model = models.moe_model(ep_size, models.ep_rank_of(rank, ep_size))
    engine, *_ = deepspeed_ext.initialize(model=model, config=config(stage, clip, precision))
    if load_dir is not None:
        engine.load_checkpoint(load_dir, load_optimizer_states=load_ep == ep_size)
    losses = []
    for step in range(engine.global_steps, STEPS):  # resumed: from the saved step on
        torch.manual_seed(step * 10 + rank)
        loss = engine(*models.batch(rank, step))
        engine.backward(loss)
        engine.step()
        losses.append(float(loss))
        if save_dir is not None and step == STEPS // 2 - 1:
            engine.save_checkpoint(save_dir, tag="half")
    return {"losses": losses, "state": {k: v.float() for k, v in full_state(engine, ep_size).items()},
            "files": sorted(os.listdir(os.path.join(save_dir, "half"))) if save_dir else None}


@pytest.mark.parametrize("stage,clip", [(0, 0.0), (0, 0.5), (1, 0.0), (2, 0.5)])
def test_expert_parallel_training_equals_every_expert_on_every_rank(stage, clip):
    split = run_ranks(train_on_rank, 2, 2, stage, clip)
    whole = run_ranks(train_on_rank, 2, 1, stage, clip)
    assert split[0]["losses"][-1] < split[0]["losses"][0]  # it learns
    for a, b in zip(split, whole):
        assert a["losses"] == pytest.approx(b["losses"], abs=1e-5)
    for name, value in whole[0]["state"].items():
        torch.testing.assert_close(split[0]["state"][name], value, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("stage,precision", [(0, "fp16"), (2, "bf16")])
def test_half_precision_expert_parallel_training_follows_every_expert_on_every_rank(stage, precision):
    split = run_ranks(train_on_rank, 2, 2, stage, 0.5, None, None, None, precision)
    whole = run_ranks(train_on_rank, 2, 1, stage, 0.5, None, None, None, precision)
    assert split[0]["losses"][-1] < split[0]["losses"][0]
    assert split[0]["losses"] == pytest.approx(whole[0]["losses"], abs=2e-2)
    for name, value in whole[0]["state"].items():
        torch.testing.assert_close(split[0]["state"][name], value, atol=2e-2, rtol=2e-2, msg=name)


@pytest.mark.parametrize("stage", [0, 2])
def test_checkpoint_round_trip_and_onto_another_ep_size(tmp_path, stage):
    uninterrupted = run_ranks(train_on_rank, 2, 2, stage, 0.0, str(tmp_path))
    files = uninterrupted[0]["files"]
    assert "mp_rank_00_model_states.pt" in files
    assert {f"layer_0_expert_{e}_mp_rank_00_model_states.pt" for e in range(models.EXPERTS)} <= set(files)
    if stage == 0:
        assert {"expp_rank_0_mp_rank_00_optim_states.pt", "expp_rank_1_mp_rank_00_optim_states.pt"} <= set(files)
    saved = torch.load(tmp_path / "half" / "mp_rank_00_model_states.pt", weights_only=False)
    assert not any("deepspeed_experts" in key for key in saved["module"]) and saved["num_experts"] == [models.EXPERTS]
    resumed = run_ranks(train_on_rank, 2, 2, stage, 0.0, None, str(tmp_path), 2)
    for name, value in uninterrupted[0]["state"].items():
        torch.testing.assert_close(resumed[0]["state"][name], value, atol=1e-6, rtol=1e-6, msg=name)
    # every expert's weights land on a layout of one expert-parallel rank (all experts on each rank)
    weights = run_ranks(load_weights_on_rank, 2, str(tmp_path), 1, stage)
    half = torch.load(tmp_path / "half" / "layer_0_expert_3_mp_rank_00_model_states.pt", weights_only=False)
    for key, value in half.items():
        assert torch.equal(weights[0][key], value)


def load_weights_on_rank(load_dir: str, ep_size: int, stage: int):
    rank = int(os.environ["RANK"])
    engine, *_ = deepspeed_ext.initialize(model=models.moe_model(ep_size, models.ep_rank_of(rank, ep_size)),
                                          config=config(stage))
    with pytest.raises(ValueError, match="saved with MoE ep_size"):
        engine.load_checkpoint(load_dir)
    engine.load_checkpoint(load_dir, load_optimizer_states=False)
    return full_state(engine, ep_size)


def test_zero_3_is_refused():
    results = run_ranks(refused_on_rank, 2)
    assert all("stage 3 does not shard MoE" in message for message in results)


def refused_on_rank():
    rank = int(os.environ["RANK"])
    try:
        deepspeed_ext.initialize(model=models.moe_model(2, models.ep_rank_of(rank, 2)), config=config(3))
    except Exception as error:  # noqa: BLE001 - the message is the result
        return str(error)
    return "initialized"


def test_the_progress_line_reports_the_aux_loss():
    lines = run_ranks(progress_on_rank, 2)
    assert f"moe aux loss {lines[0][1]:.4f}" in lines[0][0] and lines[1][0] == ""


def progress_on_rank():
    import contextlib
    import io

    rank = int(os.environ["RANK"])
    engine, *_ = deepspeed_ext.initialize(model=models.moe_model(2, models.ep_rank_of(rank, 2)),
                                          config={**config(0), "steps_per_print": 1})
    loss = engine(*models.batch(rank, 0))
    engine.backward(loss)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        engine.step()
    return printed.getvalue(), float(engine.moe.deepspeed_moe.l_aux)
