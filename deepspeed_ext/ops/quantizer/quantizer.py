"""Python glue of the quantizer op: argument handling, shapes, and the fake impls that let
torch.compile trace code that quantizes."""

from __future__ import annotations

import functools

import torch

from deepspeed_ext.ops.op_builder import QuantizerBuilder


@functools.cache
def quantizer_ops():
    """torch.ops.deepspeed_ext with quantize / dequantize loaded (prebuilt or JIT)."""
    ops = QuantizerBuilder().load()
    torch.library.register_fake("deepspeed_ext::quantize")(_quantize_fake)
    torch.library.register_fake("deepspeed_ext::dequantize")(_dequantize_fake)
    return ops


def _quantize_fake(input, group_size, bits, symmetric, stochastic, seed):
    groups = input.numel() // group_size
    return (input.new_empty(input.numel() * bits // 8, dtype=torch.uint8),
            input.new_empty(groups, dtype=torch.float32), input.new_empty(groups, dtype=torch.float32))


def _dequantize_fake(packed, scales, offsets, group_size, bits, symmetric, dtype):
    return packed.new_empty(scales.numel() * group_size, dtype=dtype)


def quantize(input: torch.Tensor, group_size: int = 256, bits: int = 8, symmetric: bool = True,
             stochastic: bool = False, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize `input` (fp32 / bf16 / fp16; numel a multiple of group_size) in groups of
    group_size consecutive elements. Returns (packed uint8 levels, one byte a value for
    8 bits and two for 4 bits; fp32 scales; fp32 offsets), with x ~= level * scale + offset.
    Symmetric levels are signed (int8 / 4-bit two's complement), asymmetric unsigned.
    stochastic rounds down or up at random (reproducible from `seed`), unbiased on average.
    inf / NaN raise."""
    return quantizer_ops().quantize(input.contiguous(), group_size, bits, symmetric, stochastic, seed)


def dequantize(packed: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor, group_size: int = 256,
               bits: int = 8, symmetric: bool = True, dtype: torch.dtype = torch.float32,
               shape=None) -> torch.Tensor:
    """The values `quantize` encoded, in `dtype`, shaped as `shape` (flat by default)."""
    values = quantizer_ops().dequantize(packed, scales, offsets, group_size, bits, symmetric, dtype)
    return values if shape is None else values.view(shape)


def ds_quantizer(input: torch.Tensor, groups: int = 1, bit_num: int = 8, sr: bool = False, asym: bool = False,
                 seed: int = 0) -> torch.Tensor:
    """DeepSpeed's fake-quantize: `input` quantized in `groups` equal groups and dequantized
    back, in its own dtype and shape (a new tensor)."""
    if input.numel() % groups:
        raise ValueError(f"ds_quantizer: input has {input.numel()} elements, not divisible into {groups} groups")
    group_size = input.numel() // groups
    packed, scales, offsets = quantize(input, group_size, bit_num, not asym, sr, seed)
    return dequantize(packed, scales, offsets, group_size, bit_num, not asym, input.dtype, input.shape)
