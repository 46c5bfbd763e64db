"""init_inference with int8 / int4 weights: accuracy of the digits classifier and outputs of
a GPT-2-shaped random model stay close to fp32 while the model shrinks; casts; errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import deepspeed_ext as deepspeed
from deepspeed_ext import ConfigError
from deepspeed_ext.inference import QuantizedLinear, model_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "digits"))
from model import DigitsNet, digits_split


def trained_digits() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    train_set, test_set = digits_split(0)
    model = DigitsNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(15):
        for images, labels in torch.utils.data.DataLoader(train_set, batch_size=64, shuffle=True):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
    return model, *test_set.tensors


def accuracy(model, images, labels) -> float:
    with torch.no_grad():
        return (model(images).argmax(dim=1) == labels).float().mean().item() * 100


@pytest.mark.parametrize("bits,max_drop,max_ratio", [(8, 1.0, 0.32), (4, 3.0, 0.2)])
def test_digits_accuracy_and_bytes(bits, max_drop, max_ratio):
    model, images, labels = trained_digits()
    before, size = accuracy(model, images, labels), model_bytes(model)
    engine = deepspeed.init_inference(model, dtype=torch.int8, quant={"bits": bits, "group_size": 64})
    assert sum(isinstance(m, QuantizedLinear) for m in engine.modules()) == 3
    after = accuracy(engine, images, labels)
    print(f"digits {bits}-bit: accuracy {before:.2f}% -> {after:.2f}%, bytes {size} -> {model_bytes(engine)}")
    assert before >= 95 and before - after <= max_drop
    assert model_bytes(engine) <= max_ratio * size


class GPT2Shaped(torch.nn.Module):
    """GPT-2's layer shapes at a small width: c_attn, c_proj, c_fc, tied lm_head."""

    def __init__(self, vocab=1000, width=256, heads=4, layers=2, context=64) -> None:
        super().__init__()
        self.heads = heads
        self.wte, self.wpe = torch.nn.Embedding(vocab, width), torch.nn.Embedding(context, width)
        self.blocks = torch.nn.ModuleList(torch.nn.ModuleDict({
            "ln_1": torch.nn.LayerNorm(width), "c_attn": torch.nn.Linear(width, 3 * width),
            "attn_proj": torch.nn.Linear(width, width), "ln_2": torch.nn.LayerNorm(width),
            "c_fc": torch.nn.Linear(width, 4 * width), "mlp_proj": torch.nn.Linear(4 * width, width)})
            for _ in range(layers))
        self.ln_f = torch.nn.LayerNorm(width)
        self.lm_head = torch.nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, tokens):
        h = self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1]))
        for block in self.blocks:
            q, k, v = block["c_attn"](block["ln_1"](h)).split(h.shape[-1], dim=-1)
            split = [t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v)]
            attended = torch.nn.functional.scaled_dot_product_attention(*split, is_causal=True)
            h = h + block["attn_proj"](attended.transpose(1, 2).flatten(-2))
            h = h + block["mlp_proj"](torch.nn.functional.gelu(block["c_fc"](block["ln_2"](h))))
        return self.lm_head(self.ln_f(h))


def test_gpt2_shaped_model_outputs_stay_close():
    torch.manual_seed(0)
    model = GPT2Shaped()
    tokens = torch.randint(0, 1000, (2, 32))
    with torch.no_grad():
        reference = model(tokens)
    size = model_bytes(model)
    engine = deepspeed.init_inference(model, config={"dtype": "int8"})
    assert isinstance(engine.module.lm_head, torch.nn.Linear)  # tied to wte: kept
    assert sum(isinstance(m, QuantizedLinear) for m in engine.modules()) == 8
    logits = engine(tokens)
    error = ((logits - reference).norm() / reference.norm()).item()
    print(f"GPT-2-shaped: relative logit error {error:.4f}, bytes {size} -> {model_bytes(engine)}")
    assert error < 0.01 and model_bytes(engine) < 0.6 * size
    assert (logits.argmax(-1) == reference.argmax(-1)).float().mean() > 0.95


def test_casts_and_errors():
    assert deepspeed.init_inference(torch.nn.Linear(4, 4), dtype="bf16").module.weight.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="replace_with_kernel_inject not supported"):
        deepspeed.init_inference(torch.nn.Linear(4, 4), replace_with_kernel_inject=True)
    with pytest.raises(ConfigError, match="dtype must be one of"):
        deepspeed.init_inference(torch.nn.Linear(4, 4), dtype=torch.int32)
    with pytest.raises(ConfigError, match="init_inference.quant.bits must be one of 8, 4"):
        deepspeed.init_inference(torch.nn.Linear(4, 4), dtype=torch.int8, quant={"bits": 2})
