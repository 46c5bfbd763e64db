"""Pipeline checkpoints: DeepSpeed's file layout, an exact resume, loading on another number
of stages (weights, counters and schedule; optimizer states refused with a clear error) and
into a plain model of the same layers."""

import os

import pytest
import torch

import deepspeed_ext as deepspeed
from deepspeed_ext.pipe import plain_state_dict
from tests.pipe import models
from tests.ranks import run_ranks

MICRO, ACCUMULATION = 2, 2
SCHEDULE = {"scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 4, "warmup_max_lr": 1e-2}}}


def engine_on(stages: int, zero: int):
    deepspeed.init_distributed(verbose=False)
    module = models.pipeline(models.dense_specs(), stages, torch.nn.functional.cross_entropy)
    extra = {**SCHEDULE, "zero_optimization": {"stage": zero}}
    return deepspeed.initialize(model=module, config=models.config(MICRO, ACCUMULATION, **extra))[0]


def stream(engine, steps: int, first_step: int):
    dp = engine.dp_world_size
    data = models.batches("dense", first_step + steps, MICRO * ACCUMULATION * dp)[first_step:]
    return models.micro_batches(data, MICRO, ACCUMULATION, engine.dp_rank, dp)


def train_save_train(folder: str, stages: int, zero: int) -> dict:
    engine = engine_on(stages, zero)
    data = stream(engine, 3, 0)
    losses = [float(engine.train_batch(data)) for _ in range(2)]
    engine.save_checkpoint(folder, client_state={"note": "kept"})
    engine.save_16bit_model(folder + "_16bit")
    saved = models.gathered_state(engine)
    losses.append(float(engine.train_batch(data)))
    return {"losses": losses, "saved": saved, "final": models.gathered_state(engine), "lr": engine.get_lr()}


def load_and_train(folder: str, stages: int, zero: int, **load_kwargs) -> dict:
    engine = engine_on(stages, zero)
    try:
        _, client = engine.load_checkpoint(folder, **load_kwargs)
    except Exception as error:  # noqa: BLE001 - every rank reports what it raised
        return {"error": f"{type(error).__name__}: {error}"}
    loaded = models.gathered_state(engine)
    steps = engine.global_steps
    loss = float(engine.train_batch(stream(engine, 1, 2)))
    return {"loaded": loaded, "loss": loss, "final": models.gathered_state(engine), "client": client,
            "steps": steps, "lr": engine.get_lr()}


@pytest.mark.parametrize("zero,world", [(0, 2), (1, 4)])
def test_resume_layout_and_other_stage_counts(tmp_path, zero, world):
    folder = str(tmp_path / "ckpt")
    first = run_ranks(train_save_train, world, folder, 2, zero)[0]
    tag = tmp_path / "ckpt" / "global_step2"
    names = sorted(os.listdir(tag))
    assert [n for n in names if n.startswith("layer_")] == [f"layer_{i:02d}-model_states.pt" for i in range(8)]
    assert "mp_rank_00_model_states.pt" in names and "mp_rank_01_model_states.pt" in names
    if zero:
        assert {f"zero_pp_rank_{d}_mp_rank_{s:02d}_optim_states.pt" for d in (0, 1) for s in (0, 1)} <= set(names)
    assert torch.load(tag / "mp_rank_01_model_states.pt", weights_only=False)["module"] is None

    resumed = run_ranks(load_and_train, world, folder, 2, zero)
    assert resumed[0]["client"] == {"note": "kept"} and resumed[0]["steps"] == 2
    assert resumed[0]["loss"] == first["losses"][2]  # the same step as without stopping, bit for bit
    for name, value in first["final"].items():
        assert torch.equal(resumed[0]["final"][name], value), name

    refused = run_ranks(load_and_train, 4, folder, 4, zero)
    assert all("optimizer states belong to a stage's layers" in r["error"] for r in refused)  # on every rank
    moved = run_ranks(load_and_train, 4, folder, 4, zero, load_optimizer_states=False)
    for name, value in first["saved"].items():
        assert torch.equal(moved[0]["loaded"][name], value), name
    assert moved[0]["steps"] == 2 and moved[0]["lr"] == resumed[0]["lr"]  # counters and schedule carried over

    for weights in (plain_state_dict(folder), torch.load(f"{folder}_16bit/pytorch_model.bin")):
        plain = models.plain_model(models.dense_specs())
        plain.load_state_dict(weights)  # strict: every layer, nothing else
        for name, value in plain.state_dict().items():
            assert torch.equal(value, first["saved"][name]), name


def test_plain_state_dict_without_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"), pytest.warns(UserWarning, match="no checkpoint"):
        plain_state_dict(tmp_path)
    (tmp_path / "latest").write_text("t")
    (tmp_path / "t").mkdir()
    with pytest.raises(FileNotFoundError, match="not a pipeline checkpoint"):
        plain_state_dict(tmp_path)
