"""Engine checkpoints: DeepSpeed's layout, bit-exact resume (RNG included), crash safety,
nothing-to-load, client state, the 16-bit model file, and node-local storage."""

import os

import pytest
import torch

import deepspeed_ext as deepspeed
from deepspeed_ext.runtime import checkpoint
from tests.ranks import free_port, run_ranks

from .test_engine import ADAM, batches, mse

SCHEDULE = {"type": "WarmupLR", "params": {"warmup_num_steps": 4, "warmup_max_lr": 0.01}}


def dropout_model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.Dropout(0.3), torch.nn.ReLU(), torch.nn.Linear(32, 1))


def engine_for(precision, seed=0):
    config = {"train_batch_size": 8, "optimizer": ADAM, "scheduler": SCHEDULE, **precision}
    return deepspeed.initialize(model=dropout_model(seed), config=config)[0]


def train(engine, data):
    for x, y in data:
        engine.backward(mse(engine, x.to(engine.module[0].weight.dtype), y.to(engine.module[0].weight.dtype)))
        engine.step()


@pytest.mark.parametrize("precision", [{}, {"bf16": {"enabled": True}}, {"fp16": {"enabled": True}}])
def test_resume_continues_bit_for_bit(tmp_path, precision):
    data = batches(6, 8)
    original = engine_for(precision)
    train(original, data[:3])
    original.save_checkpoint(tmp_path, client_state={"epoch": 7})
    train(original, data[3:])

    resumed = engine_for(precision, seed=123)  # other initial weights: everything must come from the checkpoint
    path, client = resumed.load_checkpoint(tmp_path)
    assert path.endswith("global_step3") and client == {"epoch": 7}
    assert resumed.global_steps == 3
    train(resumed, data[3:])
    for a, b in zip(original.module.parameters(), resumed.module.parameters()):
        assert torch.equal(a, b)
    assert resumed.get_lr() == original.get_lr()


def test_layout_is_deepspeeds(tmp_path):
    engine = engine_for({})
    train(engine, batches(2, 8))
    engine.save_checkpoint(tmp_path, tag="my_tag", client_state={"note": "hi"})
    assert (tmp_path / "latest").read_text() == "my_tag"
    states = torch.load(tmp_path / "my_tag" / "mp_rank_00_model_states.pt", weights_only=False)
    for key in ("module", "optimizer", "lr_scheduler", "global_steps", "ds_config", "ds_version", "note"):
        assert key in states
    assert states["global_steps"] == 2 and (tmp_path / "my_tag" / "rng_state_rank_0.pt").is_file()
    with pytest.raises(ValueError, match="clash"):
        engine.save_checkpoint(tmp_path, client_state={"module": 1})


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    engine = engine_for({})
    train(engine, batches(1, 8))
    engine.save_checkpoint(tmp_path)
    saved = [p.detach().clone() for p in engine.module.parameters()]
    train(engine, batches(1, 8, seed=5))
    real_save = torch.save

    def crash_on_model_states(obj, path, *args, **kwargs):
        if str(getattr(path, "name", path)).endswith(checkpoint.MODEL_STATES):  # a path or an open file
            raise OSError("disk full")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", crash_on_model_states)
    with pytest.raises(OSError, match="disk full"):
        engine.save_checkpoint(tmp_path)
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / "latest").read_text() == "global_step1"
    fresh = engine_for({}, seed=9)
    path, _ = fresh.load_checkpoint(tmp_path)
    assert path.endswith("global_step1")
    assert all(torch.equal(a, b) for a, b in zip(saved, fresh.module.parameters()))
    engine.save_checkpoint(tmp_path)  # the next save clears the half-written folder
    assert (tmp_path / "latest").read_text() == "global_step2" and not list(tmp_path.glob(".*staging"))


def test_overwriting_a_tag_and_loading_nothing(tmp_path):
    engine = engine_for({})
    engine.save_checkpoint(tmp_path, tag="same")
    train(engine, batches(1, 8))
    engine.save_checkpoint(tmp_path, tag="same")
    assert torch.load(tmp_path / "same" / "mp_rank_00_model_states.pt", weights_only=False)["global_steps"] == 1
    with pytest.warns(UserWarning, match="no checkpoint to load"):
        assert engine_for({}).load_checkpoint(tmp_path / "empty") == (None, None)
    with pytest.raises(FileNotFoundError, match="checkpoint tag 'nope' not found"):
        engine.load_checkpoint(tmp_path, tag="nope")


def test_module_only_load_and_16bit_model(tmp_path):
    engine = engine_for({"bf16": {"enabled": True}})
    train(engine, batches(2, 8))
    engine.save_checkpoint(tmp_path)
    engine.save_16bit_model(tmp_path, "model.bin")
    weights = torch.load(tmp_path / "model.bin")
    assert weights["0.weight"].dtype == torch.bfloat16
    other = engine_for({"bf16": {"enabled": True}}, seed=4)
    other.load_checkpoint(tmp_path, load_module_only=True)
    assert other.global_steps == 0
    assert torch.equal(other.module[0].weight, engine.module[0].weight)
    assert torch.equal(other.optimizer.param_groups[0]["params"][0], engine.module[0].weight.float())


def node_local_save_and_resume(folder: str, stage: int):
    """Each rank plays a node of its own (LOCAL_RANK 0) with its own disk (folder/node<rank>):
    with checkpoint.use_node_local_storage every node holds what it needs to resume."""
    from tests.runtime.zero import models

    config = {"train_micro_batch_size_per_gpu": 2, "optimizer": ADAM, "zero_optimization": {"stage": stage},
              "checkpoint": {"use_node_local_storage": True}}
    rank = int(os.environ["RANK"])
    data = models.batches(4, 2, seed=10 + rank)
    disk = os.path.join(folder, f"node{rank}")
    engine, _, _, _ = deepspeed.initialize(model=models.make_model(), config=config)
    for step, (x, y) in enumerate(data):
        engine.backward(models.loss_of(engine, x, y, step))
        engine.step()
        if step == 1:
            engine.save_checkpoint(disk)
    resumed, _, _, _ = deepspeed.initialize(model=models.make_model(seed=5), config=config)
    resumed.load_checkpoint(disk)
    for step, (x, y) in list(enumerate(data))[2:]:
        resumed.backward(models.loss_of(resumed, x, y, step))
        resumed.step()
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters()) + list(resumed.module.parameters())):
        same = all(torch.equal(a, b) for a, b in zip(engine.module.parameters(), resumed.module.parameters()))
    return same, sorted(os.listdir(disk))


@pytest.mark.parametrize("stage", [0, 2])
def test_node_local_storage_lets_every_node_resume(tmp_path, stage):
    nodes = [{"RANK": str(r), "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
              "MASTER_PORT": str(port)} for port in [free_port()] for r in range(2)]
    for same, listing in run_ranks(node_local_save_and_resume, 2, str(tmp_path), stage, rank_envs=nodes):
        assert same and "latest" in listing and "global_step2" in listing


def test_node_local_storage_is_refused_at_stage3():
    with pytest.raises(deepspeed.ConfigError, match="use_node_local_storage is not supported at ZeRO stage 3"):
        deepspeed.initialize(model=dropout_model(0), config={"train_batch_size": 2, "optimizer": ADAM,
                                                             "zero_optimization": {"stage": 3},
                                                             "checkpoint": {"use_node_local_storage": True}})


def test_apex_amp_is_refused():
    with pytest.raises(deepspeed.ConfigError, match="amp.enabled: NVIDIA Apex AMP is not supported"):
        deepspeed.initialize(model=dropout_model(0), config={"train_batch_size": 2, "optimizer": ADAM,
                                                             "amp": {"enabled": True, "opt_level": "O1"}})
    deepspeed.initialize(model=dropout_model(0), config={"train_batch_size": 2, "optimizer": ADAM,
                                                         "amp": {"enabled": "auto", "opt_level": "auto"}})
