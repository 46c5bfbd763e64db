"""Python glue of the quantizer op: output buffers (given, or allocated here) and shapes.
The ops write into their outputs, so torch.compile traces them with no-op fakes."""

from __future__ import annotations

import torch

from deepspeed_ext.ops.op_builder import QuantizerBuilder
from deepspeed_ext.ops.op_loading import check_dense, load_mutating_ops


def quantizer_ops():
    """torch.ops.deepspeed_ext with quantize_into / dequantize_into loaded (prebuilt or JIT)."""
    return load_mutating_ops(QuantizerBuilder, ("quantize_into", "dequantize_into"))


def quantize(input: torch.Tensor, group_size: int = 256, bits: int = 8, symmetric: bool = True,
             stochastic: bool = False, seed: int = 0, out=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize `input` (fp32 / bf16 / fp16; numel a multiple of group_size) in groups of
    group_size consecutive elements. Returns (packed uint8 levels, one byte a value for
    8 bits and two for 4 bits; fp32 scales; fp32 offsets), with x ~= level * scale + offset.
    Symmetric levels are signed (int8 / 4-bit two's complement), asymmetric unsigned.
    stochastic rounds down or up at random (reproducible from `seed`), unbiased on average.
    inf / NaN raise. `out`: the three tensors to write (reused buffers save page faults)."""
    check_dense("quantize", [("input", input)])
    input = input.contiguous()
    if out is None:
        groups = input.numel() // group_size if group_size > 0 else 0
        out = (torch.empty(input.numel() * bits // 8, dtype=torch.uint8, device=input.device),
               torch.empty(groups, dtype=torch.float32, device=input.device),
               torch.empty(groups, dtype=torch.float32, device=input.device))
    quantizer_ops().quantize_into(input, *out, group_size, bits, symmetric, stochastic, seed)
    return tuple(out)


def dequantize(packed: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor, group_size: int = 256,
               bits: int = 8, symmetric: bool = True, dtype: torch.dtype = torch.float32,
               shape=None, out: torch.Tensor | None = None) -> torch.Tensor:
    """The values `quantize` encoded, in `dtype` (or into `out`), shaped as `shape` (flat by default).
    Symmetric groups have offset 0, so `offsets` is not read when `symmetric`."""
    check_dense("dequantize", [("packed", packed), ("scales", scales), ("offsets", offsets)])
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1 or bits not in (4, 8):
        raise ValueError(f"dequantize: group_size must be a positive integer and bits 4 or 8, got {group_size!r} "
                         f"and {bits!r}")
    if packed.numel() * 8 != scales.numel() * group_size * bits:  # checked before sizing the output
        raise ValueError(f"dequantize: packed has {packed.numel()} bytes; {scales.numel()} groups of {group_size} "
                         f"{bits}-bit values need {scales.numel() * group_size * bits // 8}")
    if out is None:
        out = torch.empty(scales.numel() * group_size, dtype=dtype, device=packed.device)
    quantizer_ops().dequantize_into(packed, scales, offsets, out, group_size, bits, symmetric)
    return out if shape is None else out.view(shape)


def ds_quantizer(input: torch.Tensor, groups: int = 1, bit_num: int = 8, sr: bool = False, asym: bool = False,
                 seed: int = 0) -> torch.Tensor:
    """DeepSpeed's fake-quantize: `input` quantized in `groups` equal groups and dequantized
    back, in its own dtype and shape (a new tensor)."""
    if input.numel() % groups:
        raise ValueError(f"ds_quantizer: input has {input.numel()} elements, not divisible into {groups} groups")
    group_size = input.numel() // groups
    packed, scales, offsets = quantize(input, group_size, bit_num, not asym, sr, seed)
    return dequantize(packed, scales, offsets, group_size, bit_num, not asym, input.dtype, input.shape)
