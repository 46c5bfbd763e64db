"""Dropping an engine, or engine.destroy(), gives its memory back: hooks on the params refer to
it weakly (a tensor's hooks are invisible to the garbage collector, so a strong one made a
cycle that was never freed), and destroy() lets go of masters, optimizer states and
gradient buffers. Each case runs in a fresh process (the rank harness, one rank) and reads
its resident memory."""

import ctypes
import gc

import pytest
import torch

import deepspeed_ext as deepspeed
from tests.ranks import run_ranks

ENGINES = 5
TOLERANCE = 0.10  # the bound: five engines end within 10% of the RSS after the first


def resident_mb() -> float:
    """RSS once the allocator has returned its free pages (glibc keeps freed blocks mapped, which
    made the readings wander by 20% with nothing alive)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def trained_engine(stage: int):
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(8)])  # 8.4M params
    config = {"train_batch_size": 2, "optimizer": {"type": "Adam", "params": {"lr": 1e-3}}, "bf16": {"enabled": True},
              "zero_optimization": {"stage": stage}}
    engine = deepspeed.initialize(model=model, config=config)[0]
    for _ in range(2):
        engine.backward(engine(torch.randn(2, 1024, dtype=torch.bfloat16)).float().sum())
        engine.step()
    return engine


def rss_after_each_dropped_engine(stage: int, destroy: bool) -> list[float]:
    readings, destroyed = [], []
    for _ in range(ENGINES):
        engine = trained_engine(stage)
        if destroy:
            engine.destroy()
            destroyed.append(engine)  # destroy() alone must free its memory: the object stays referenced
        del engine
        readings.append(resident_mb())
    return readings


MODEL_MB = 8 * (1024 * 1024 + 1024) * 2 / 2**20  # the bf16 params a destroyed engine's module still holds


@pytest.mark.parametrize("stage", [0, 2, 3])
@pytest.mark.parametrize("destroy", [False, True])
def test_dropped_engines_give_their_memory_back(stage, destroy):
    """Dropped: five engines end within 10% of the RSS after the first. Destroyed but still
    referenced: each keeps only its module's own params (the user's model)."""
    readings = run_ranks(rss_after_each_dropped_engine, 1, stage, destroy)[0]
    kept = [index * MODEL_MB if destroy else 0.0 for index in range(ENGINES)]
    assert all(reading - own <= readings[0] * (1 + TOLERANCE) for reading, own in zip(readings, kept)), readings


def test_a_destroyed_engine_refuses_to_train_or_save(tmp_path):
    engine = trained_engine(2)
    engine.destroy()
    for call in (lambda: engine.step(), lambda: engine.save_checkpoint(tmp_path)):
        with pytest.raises(RuntimeError, match="this engine was destroyed"):
            call()
    assert not any(hasattr(p, "_ds_link") for p in engine.module.parameters())
