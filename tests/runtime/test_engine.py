"""DeepSpeedEngine at stage 0: equal to a plain loop, accumulation, fp16 overflow skips,
bf16, schedules, data loading, the DeepSpeed getters, and two gloo ranks equal to one
process with the global batch."""

import os
import sys

import pytest
import torch

import deepspeed_ext as deepspeed
from deepspeed_ext.ops.cpu_adam import DeepSpeedCPUAdam
from tests.ranks import run_ranks

ADAM = {"type": "Adam", "params": {"lr": 1e-2}}


def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def batches(count, size, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 6, generator=generator), torch.randn(size, 1, generator=generator))
            for _ in range(count)]


def mse(model, x, y):
    return torch.nn.functional.mse_loss(model(x), y)


def train_engine(config, data, model=None, **kwargs):
    engine, _, _, _ = deepspeed.initialize(model=model or make_model(), config=config, **kwargs)
    for x, y in data:
        engine.backward(mse(engine, x, y))
        engine.step()
    return engine


def test_engine_equals_a_plain_loop():
    data = batches(6, 8)
    engine = train_engine({"train_batch_size": 8, "optimizer": ADAM}, data)
    model = make_model()
    optimizer = DeepSpeedCPUAdam(model.parameters(), lr=1e-2, adamw_mode=False)
    for x, y in data:
        mse(model, x, y).backward()
        optimizer.step()
        optimizer.zero_grad()
    for ours, theirs in zip(engine.module.parameters(), model.parameters()):
        assert torch.equal(ours, theirs)
    assert engine.global_steps == 6 and engine.global_samples == 48


def test_accumulation_equals_one_big_batch():
    big = batches(3, 8)
    micro = [(x[i:i + 2], y[i:i + 2]) for x, y in big for i in range(0, 8, 2)]
    accumulated = train_engine({"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 4,
                                "optimizer": ADAM}, micro)
    single = train_engine({"train_batch_size": 8, "optimizer": ADAM}, big)
    assert accumulated.global_steps == 3 and accumulated.micro_steps == 12
    for a, b in zip(accumulated.module.parameters(), single.module.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_fp16_overflow_skips_the_step_and_lowers_the_scale():
    config = {"train_batch_size": 4, "optimizer": ADAM,
              "fp16": {"enabled": True, "initial_scale_power": 8, "hysteresis": 1}}
    engine, _, _, _ = deepspeed.initialize(model=make_model(), config=config)
    x, y = batches(1, 4)[0]
    before = [p.detach().clone() for p in engine.module.parameters()]
    engine.backward(mse(engine, x.half(), y.half()) * float("inf"))
    engine.step()
    assert not engine.was_step_applied() and engine.skipped_steps == 1
    assert engine.loss_scaler.scale == 128.0
    assert all(torch.equal(a, b) for a, b in zip(before, engine.module.parameters()))
    engine.backward(mse(engine, x.half(), y.half()))
    engine.step()
    assert engine.was_step_applied() and engine.module[0].weight.dtype == torch.float16
    assert not all(torch.equal(a, b) for a, b in zip(before, engine.module.parameters()))


def test_bf16_trains_on_fp32_masters():
    data = batches(1, 64) * 60
    engine = train_engine({"train_batch_size": 64, "optimizer": ADAM, "bf16": {"enabled": True}},
                          [(x.bfloat16(), y.bfloat16()) for x, y in data])
    assert engine.module[0].weight.dtype == torch.bfloat16 and engine.bfloat16_enabled()
    assert engine.optimizer.param_groups[0]["params"][0].dtype == torch.float32
    x, y = data[0]
    start = mse(make_model(), x, y).item()
    assert mse(engine.module, x.bfloat16(), y.bfloat16()).item() < start / 2


def test_scheduler_clipping_and_getters():
    config = {"train_batch_size": 4, "optimizer": {"type": "AdamW", "params": {"lr": 0.1}}, "gradient_clipping": 0.5,
              "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 10, "warmup_type": "linear",
                                                           "warmup_max_lr": 0.1}}}
    model = make_model()
    model.custom_tag = "from the module"
    engine = train_engine(config, batches(3, 4), model=model)
    assert engine.custom_tag == "from the module"  # attributes fall through to the module
    assert engine.get_lr() == pytest.approx([0.1 * 2 / 10])
    assert engine.get_global_grad_norm() > 0 and engine.train_batch_size() == 4
    assert engine.gradient_accumulation_steps() == 1 and engine.zero_optimization_stage() == 0
    assert not engine.fp16_enabled() and engine.world_size == 1 and engine.global_rank == 0


def test_training_data_gives_micro_batches():
    dataset = torch.utils.data.TensorDataset(torch.randn(20, 6), torch.randn(20, 1))
    _, _, loader, _ = deepspeed.initialize(model=make_model(), training_data=dataset,
                                                config={"train_micro_batch_size_per_gpu": 4,
                                                        "gradient_accumulation_steps": 2, "optimizer": ADAM,
                                                        "dataloader_drop_last": True})
    assert [len(x) for x, _ in loader] == [4] * 5


def test_client_optimizer_and_errors():
    model = make_model()
    _, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                                   config={"train_batch_size": 2})
    assert isinstance(optimizer, torch.optim.SGD)
    with pytest.raises(deepspeed.ConfigError, match="exactly once"):
        deepspeed.initialize(model=make_model(), config={"train_batch_size": 2}, config_params={})
    # no optimizer anywhere: an engine for forward passes (HF's evaluate / predict), not for training
    engine, optimizer, _, _ = deepspeed.initialize(model=make_model(), config={"train_batch_size": 2})
    assert optimizer is None and engine(torch.ones(2, 6)).shape == (2, 1)
    with pytest.raises(RuntimeError, match="without an optimizer"):
        engine.backward(engine(torch.ones(2, 6)).sum())
    with pytest.raises(deepspeed.ConfigError, match="without an optimizer to schedule"):
        deepspeed.initialize(model=make_model(), config={"train_batch_size": 2},
                             lr_scheduler=lambda optimizer: None)
    with pytest.raises(deepspeed.ConfigError, match=r"optimizer.type: unknown optimizer 'Adamm' \(did you mean"):
        deepspeed.initialize(model=make_model(), config={"train_batch_size": 2, "optimizer": {"type": "Adamm"}})


def test_config_arguments():
    import argparse

    args = deepspeed.add_config_arguments(argparse.ArgumentParser()).parse_args(
        ["--deepspeed", "--deepspeed_config", "ds.json"])
    assert args.deepspeed and args.deepspeed_config == "ds.json"


def train_half_on_rank(accumulation: int) -> list:
    """This rank's half of each batch of 8, in micro-batches; the params afterwards."""
    rank = int(os.environ["RANK"])
    micro = 4 // accumulation
    engine, _, _, _ = deepspeed.initialize(model=make_model(), config={
        "train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": accumulation, "optimizer": ADAM})
    for x, y in batches(5, 8):
        for start in range(rank * 4, (rank + 1) * 4, micro):
            engine.backward(mse(engine, x[start:start + micro], y[start:start + micro]))
            engine.step()
    return [p.detach().clone() for p in engine.module.parameters()]


@pytest.mark.parametrize("accumulation", [1, 2])
def test_two_gloo_ranks_equal_one_process_with_the_global_batch(accumulation):
    ranks = run_ranks(train_half_on_rank, 2, accumulation)
    single = train_engine({"train_batch_size": 8, "optimizer": ADAM}, batches(5, 8))
    for on_rank0, on_rank1, param in zip(*ranks, single.module.parameters()):
        assert torch.equal(on_rank0, on_rank1)
        torch.testing.assert_close(on_rank0, param.detach(), rtol=0, atol=1e-6)


def test_csv_monitor_and_wall_clock_breakdown(tmp_path, capsys):
    config = {"train_batch_size": 4, "optimizer": ADAM, "steps_per_print": 2, "wall_clock_breakdown": True,
              "fp16": {"enabled": True}, "csv_monitor": {"enabled": True, "output_path": str(tmp_path),
                                                         "job_name": "run1"}}
    engine = deepspeed.initialize(model=make_model(), config=config)[0]
    for x, y in batches(4, 4):
        engine.backward(mse(engine, x.half(), y.half()))
        engine.step()
    rows = (tmp_path / "run1" / "Train_Samples_train_loss.csv").read_text().splitlines()
    assert rows[0] == "step,Train/Samples/train_loss" and len(rows) == 5 and rows[1].startswith("4,")
    assert (tmp_path / "run1" / "Train_Samples_loss_scale.csv").exists()
    out = capsys.readouterr().out
    assert "time (ms) | forward:" in out and "backward:" in out and "loss scale 32768" in out  # two overflows: hysteresis 2


def test_tensorboard_without_the_package_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ImportError, match="pip install tensorboard"):
        deepspeed.initialize(model=make_model(), config={"train_batch_size": 4, "optimizer": ADAM, "tensorboard": {
            "enabled": True, "output_path": str(tmp_path)}})


def test_optimizer_and_scheduler_may_be_factories():
    from deepspeed_ext.runtime.lr_schedules import LRRangeTest

    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=make_model(), config={"train_batch_size": 4},
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        lr_scheduler=lambda opt: LRRangeTest(opt, lr_range_test_min_lr=0.01, lr_range_test_step_size=1))
    assert isinstance(optimizer, torch.optim.SGD) and isinstance(scheduler, LRRangeTest)
    x, y = batches(1, 4)[0]
    engine.backward(mse(engine, x, y))
    engine.step()
    assert engine.get_lr() == pytest.approx([0.01 * (1 + 1)])  # one step: min_lr x (1 + rate x 1)
