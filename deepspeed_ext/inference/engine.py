"""init_inference: prepare a trained model for inference, as deepspeed.init_inference.

    engine = deepspeed_ext.init_inference(model, dtype=torch.int8)   # int8 weights
    logits = engine(inputs)

dtype float16 / bfloat16 / float32 casts the model; int8 replaces every nn.Linear by a
QuantizedLinear (group-wise int8 weights, dequantized on the fly; other params stay in
float32; a Linear whose weight is tied to another module, like GPT-2's lm_head, is kept).
`quant: {"bits": 4 | 8, "group_size": N}` in the config picks the format.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from deepspeed_ext.runtime.config_schema import ConfigError

from .quantized_linear import QuantizedLinear

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "int8": torch.int8}


class InferenceEngine(torch.nn.Module):
    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *inputs, **kwargs):
        with torch.no_grad():
            return self.module(*inputs, **kwargs)


def model_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's params and buffers (tied tensors counted once)."""
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def init_inference(model: torch.nn.Module, config=None, **kwargs) -> InferenceEngine:
    """`config` (dict or JSON path) and keyword arguments are merged (keywords win):
    dtype, quant {bits, group_size}. DeepSpeed's kernel-injection and tensor-parallel keys
    are not supported and raise."""
    options = dict(json.loads(Path(config).read_text()) if isinstance(config, (str, Path)) else (config or {}))
    options.update(kwargs)
    unsupported = sorted(k for k in options if k not in ("dtype", "quant"))
    if unsupported:
        raise ConfigError(f"init_inference: {', '.join(unsupported)} not supported; deepspeed_ext takes dtype and quant")
    dtype = options.get("dtype", torch.float32)
    dtype = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if dtype not in DTYPES.values():
        raise ConfigError(f"init_inference: dtype must be one of float32, float16, bfloat16, int8, got {dtype!r}")
    quant = options.get("quant") or {}
    model.eval()
    if dtype != torch.int8:
        return InferenceEngine(model.to(dtype))
    bits, group_size = int(quant.get("bits", 8)), int(quant.get("group_size", 128))
    if bits not in (4, 8):
        raise ConfigError(f"init_inference: quant.bits must be 8 or 4, got {bits}")
    model.float()
    uses: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        uses[id(param)] = uses.get(id(param), 0) + 1
    _replace_linears(model, bits, group_size, tied={key for key, count in uses.items() if count > 1})
    return InferenceEngine(model)


def _replace_linears(module: torch.nn.Module, bits: int, group_size: int, tied: set[int]) -> None:
    """Exactly nn.Linear (subclasses such as MultiheadAttention's out_proj are read by their
    owners directly); a weight tied to another module stays (a quantized copy would add bytes)."""
    for name, child in module.named_children():
        if type(child) is torch.nn.Linear and id(child.weight) not in tied:
            setattr(module, name, QuantizedLinear(child, bits, group_size))
        else:
            _replace_linears(child, bits, group_size, tied)
