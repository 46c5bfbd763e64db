"""ZeRO++ on the digits classifier (2 gloo ranks, bf16, stage 3): quantized weight gathers
(qwZ) and quantized gradient all-to-all (qgZ) cut the bytes each rank hands to collectives
(counted by comm.comms_log) about 2x and 4x, and train to within a few hundredths of plain
stage 3's loss."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

import deepspeed_ext as deepspeed
from deepspeed_ext.comm import comms_log
from tests.ranks import ROOT, run_ranks

DIGITS = Path(ROOT) / "examples" / "digits"

def train_on_rank(quantized: bool) -> dict:
    """60 bf16 stage-3 steps of the digits classifier; the losses and the bytes per purpose."""
    sys.path.insert(0, str(DIGITS))
    from model import DigitsNet, digits_split

    rank = int(os.environ["RANK"])
    torch.manual_seed(0)
    train_set, _ = digits_split(0)
    engine, _, _, _ = deepspeed.initialize(model=DigitsNet(), config={
        "train_micro_batch_size_per_gpu": 64, "bf16": {"enabled": True},
        "optimizer": {"type": "Adam", "params": {"lr": 0.006}},
        "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0,
                              "zero_quantized_weights": quantized, "zero_quantized_gradients": quantized}})
    images, labels = train_set.tensors
    comms_log.take()
    losses = []
    for step in range(60):
        start = (step * 128 + rank * 64) % (len(images) - 64)
        loss = torch.nn.functional.cross_entropy(engine(images[start:start + 64].bfloat16()).float(),
                                                 labels[start:start + 64])
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    return {"losses": losses, "bytes": comms_log.by_purpose()}


@pytest.fixture(scope="module")
def runs():
    return {quantized: run_ranks(train_on_rank, 2, quantized) for quantized in (False, True)}


def test_quantized_collectives_send_fewer_bytes(runs):
    plain, zero_pp = runs[False][0]["bytes"], runs[True][0]["bytes"]
    print(f"bytes per rank over 60 steps: plain {plain}, ZeRO++ {zero_pp}")
    assert plain["parameters"] / zero_pp["parameters"] > 1.9  # bf16 -> int8 + a scale per 256
    assert plain["gradients"] / zero_pp["gradients"] > 3.5  # bf16 -> int4 + a scale per 128


def test_zero_pp_trains_like_stage3(runs):
    def late_mean(result):
        return sum(sum(r["losses"][-20:]) for r in result) / (20 * len(result))
    plain, zero_pp = late_mean(runs[False]), late_mean(runs[True])
    print(f"mean loss of the last 20 steps: plain stage 3 {plain:.4f}, ZeRO++ {zero_pp:.4f}")
    assert plain < 0.3 and abs(zero_pp - plain) < 0.05
