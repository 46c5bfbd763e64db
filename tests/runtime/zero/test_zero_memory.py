"""Per-rank model-state bytes (engine.memory_breakdown) match the ZeRO paper's formulas for
mixed-precision Adam on 2 ranks: stage 0 16Ψ, stage 1 4Ψ + 12Ψ/N, stage 2 2Ψ + 14Ψ/N,
stage 3 16Ψ/N, within 5% (padding included). The peak is sampled after every backward and
step of two accumulated micro-batches."""

from __future__ import annotations

import pytest

from tests.ranks import run_ranks

SCRIPT = """
import json, torch
import deepspeed_ext as deepspeed
torch.manual_seed(0)
model = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(4)])
engine, _, _, _ = deepspeed.initialize(model=model, config={{
    "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2, "bf16": {{"enabled": True}},
    "optimizer": {{"type": "Adam", "params": {{"lr": 0.001}}}},
    "zero_optimization": {{"stage": {stage}, "stage3_param_persistence_threshold": 0}}}})
peak = 0
for step in range(2):
    for micro in range(2):
        engine.backward(engine(torch.randn(2, 256, dtype=torch.bfloat16)).float().pow(2).mean())
        peak = max(peak, engine.memory_breakdown()["total"])
        engine.step()
        peak = max(peak, engine.memory_breakdown()["total"])
print(json.dumps({{"peak": peak, "numel": sum(p.numel() for p in model.parameters())
                   if {stage} < 3 else 4 * (256 * 256 + 256)}}))
"""
FORMULAS = {0: lambda n: 16.0, 1: lambda n: 4 + 12 / n, 2: lambda n: 2 + 14 / n, 3: lambda n: 16 / n}


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_model_state_bytes_match_the_zero_paper(stage):
    results = run_ranks(SCRIPT.format(stage=stage), 2)
    for result in results:
        expected = FORMULAS[stage](2) * result["numel"]
        assert abs(result["peak"] - expected) <= 0.05 * expected, (result["peak"], expected)
