"""ZeRO checkpoints: DeepSpeed's file layout, resume on the same or another number of ranks
(and another stage) continuing exactly as the original run, zero_to_fp32 (functions and the
script copied beside the checkpoints), and save_16bit_model under stage 3."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

import deepspeed_ext as deepspeed
from deepspeed_ext.utils.zero_to_fp32 import (
    convert_zero_checkpoint_to_fp32_state_dict,
    get_fp32_state_dict_from_zero_checkpoint,
    load_state_dict_from_zero_checkpoint,
)
from tests.ranks import run_ranks
from tests.runtime.zero.models import batches, loss_of, make_model
from tests.runtime.zero.test_zero_stages import full_params, zero_config


def train_on_rank(stage: int, folder: str, first: int, last: int, load: bool, save: bool, dtype: str) -> dict:
    """Steps first..last of 4 (resuming from folder when load), saving after step 2 when save."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    config = zero_config(stage, 1, world, dtype=dtype)
    config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    engine, _, _, _ = deepspeed.initialize(model=make_model(), config=config)
    if load:
        _, client = engine.load_checkpoint(folder)
        assert client == {"epoch": 7}, client
    data, losses = batches(4, 12), []
    share = 12 // world
    for step in range(first, last):
        x, y = data[step]
        with torch.no_grad():
            losses.append(loss_of(engine, x, y, step).item())
        engine.backward(loss_of(engine, x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share], step))
        engine.step()
        if save and step == 1:
            engine.save_checkpoint(folder, client_state={"epoch": 7})
    if save:
        assert engine.save_16bit_model(f"{folder}/16bit")
    return {"losses": losses, "params": full_params(engine.module)}


def run(stage, world, folder, first, last, load=False, save=False, dtype="fp32"):
    return run_ranks(train_on_rank, world, stage, str(folder), first, last, load, save, dtype)[0]


@pytest.fixture(scope="module", params=[2, 3])
def saved(request, tmp_path_factory):
    """A 2-rank run of 4 steps that saved after step 2, at the given stage."""
    folder = tmp_path_factory.mktemp(f"stage{request.param}")
    return request.param, folder, run(request.param, 2, folder, 0, 4, save=True)


def test_layout_is_deepspeeds(saved):
    stage, folder, _ = saved
    tag = folder / "global_step2"
    names = {p.name for p in tag.iterdir()}
    model_files = {"mp_rank_00_model_states.pt"} if stage < 3 else \
        {f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in range(2)}
    assert names == model_files | {f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(2)} \
        | {f"rng_state_rank_{r}.pt" for r in range(2)}
    assert (folder / "latest").read_text() == "global_step2"
    assert (folder / "zero_to_fp32.py").is_file()


@pytest.mark.parametrize("world,stage_change", [(1, 0), (2, 0), (3, 0), (2, -1)])
def test_resume_on_another_world_size_continues_the_same(saved, world, stage_change):
    stage, folder, original = saved
    resumed = run(stage + stage_change, world, folder, 2, 4, load=True)
    torch.testing.assert_close(torch.tensor(resumed["losses"]), torch.tensor(original["losses"][2:]), rtol=1e-5, atol=0)
    for name, values in original["params"].items():
        torch.testing.assert_close(torch.tensor(resumed["params"][name]), torch.tensor(values), rtol=0, atol=1e-5)


def test_zero_to_fp32_equals_the_unsharded_model(saved, tmp_path):
    stage, folder, _ = saved
    reference = run(stage, 2, folder, 2, 2, load=True)["params"]  # the weights as saved at step 2
    state = get_fp32_state_dict_from_zero_checkpoint(folder)
    model = make_model()
    assert sorted(state) == sorted(model.state_dict())  # every param (tied alias too) and buffer
    for name, values in reference.items():
        assert state[name].flatten().tolist() == values, name
    assert state["unembed.weight"] is state["head.weight"]
    torch.testing.assert_close(state["offset"], model.offset)

    output = convert_zero_checkpoint_to_fp32_state_dict(folder, tmp_path)
    assert output == tmp_path / "pytorch_model.bin"
    assert torch.load(output).keys() == state.keys()
    safe = convert_zero_checkpoint_to_fp32_state_dict(folder, tmp_path, safe_serialization=True)
    from safetensors.torch import load_file
    assert safe.name == "model.safetensors" and torch.equal(load_file(safe)["unembed.weight"], state["head.weight"])
    loaded = load_state_dict_from_zero_checkpoint(make_model(seed=5), folder)
    assert torch.equal(loaded.hidden.weight, state["hidden.weight"])

    # the copy beside the checkpoints runs on its own (torch only), from any folder
    script_output = tmp_path / "from_script.pt"
    done = subprocess.run([sys.executable, str(folder / "zero_to_fp32.py"), str(folder), str(script_output),
                           "--tag", "global_step2"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert torch.equal(torch.load(script_output)["hidden.weight"], state["hidden.weight"])


def test_16bit_model_is_whole(saved):
    _, folder, original = saved
    weights = torch.load(folder / "16bit" / "pytorch_model.bin")
    assert list(weights) == list(make_model().state_dict())
    assert weights["hidden.weight"].flatten().tolist() == original["params"]["hidden.weight"]


def test_missing_rank_file_is_named(saved, tmp_path):
    copy = shutil.copytree(saved[1], tmp_path / "copy")
    (copy / "global_step2" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    with pytest.raises(ValueError, match="holds 1 optimizer shards but was saved by 2 ranks"):
        get_fp32_state_dict_from_zero_checkpoint(copy)


def test_bf16_checkpoint_names_and_resume(tmp_path):
    """bf16 runs write bf16_zero_pp_rank_* optimizer files; a resume on the same ranks
    continues bit for bit, and zero_to_fp32 reads them."""
    original = run(3, 2, tmp_path, 0, 4, save=True, dtype="bf16")
    names = {p.name for p in (tmp_path / "global_step2").iterdir()}
    assert {f"bf16_zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(2)} <= names
    resumed = run(3, 2, tmp_path, 2, 4, load=True, dtype="bf16")
    assert resumed["losses"] == original["losses"][2:] and resumed["params"] == original["params"]
    state = get_fp32_state_dict_from_zero_checkpoint(tmp_path)
    assert state["hidden.weight"].dtype == torch.float32 and state["hidden.weight"].shape == (40, 40)
