"""init_inference: prepare a trained model for inference, as deepspeed.init_inference.

    engine = deepspeed_ext.init_inference(model, dtype=torch.int8)   # int8 weights
    logits = engine(inputs)

dtype float16 / bfloat16 / float32 casts the model; int8 replaces every nn.Linear by a
QuantizedLinear (group-wise int8 weights, dequantized on the fly; other params stay in
float32; a Linear whose weight is tied to another module, like GPT-2's lm_head, is kept).
`quant: {"bits": 4 | 8, "group_size": N}` in the config picks the format.
"""

from __future__ import annotations

import torch

from deepspeed_ext.runtime.config import load_config
from deepspeed_ext.runtime.config_schema import ConfigError, Key, Schema, check_section

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


QUANT = Schema({"bits": Key(8, int, choices=(8, 4)), "group_size": Key(128, int, minimum=1)})
INFERENCE = Schema({"dtype": Key("float32", str, choices=tuple(DTYPES)), "quant": Key(None, QUANT)})


def init_inference(model: torch.nn.Module, config=None, **kwargs) -> InferenceEngine:
    """`config` (dict or JSON path) and keyword arguments are merged (keywords win):
    dtype, quant {bits, group_size}, checked like the training config. DeepSpeed's
    kernel-injection and tensor-parallel keys are not supported and raise."""
    options = dict(load_config(config) if config is not None else {})
    options.update(kwargs)
    unsupported = sorted(k for k in options if k not in INFERENCE.keys)
    if unsupported:
        raise ConfigError(f"init_inference: {', '.join(unsupported)} not supported; deepspeed_ext takes dtype and quant")
    if isinstance(options.get("dtype"), torch.dtype):  # the Python API passes torch dtypes
        options["dtype"] = next((name for name, d in DTYPES.items() if d == options["dtype"]), str(options["dtype"]))
    checked = check_section(options, INFERENCE, "init_inference")
    dtype, quant = DTYPES[checked.dtype], checked.quant
    model.eval()
    if dtype != torch.int8:
        return InferenceEngine(model.to(dtype))
    bits, group_size = quant.bits, quant.group_size
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
