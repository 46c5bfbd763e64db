"""QuantizedLinear: an nn.Linear whose weight is stored as group-quantized int8 / int4 (the
quantizer op) and dequantized on the fly, one layer at a time, into a buffer the layer
keeps, then multiplied by torch's own GEMM."""

from __future__ import annotations

import torch

from deepspeed_ext.ops.quantizer import dequantize, quantize


def row_group_size(in_features: int, wanted: int) -> int:
    """The largest divisor of in_features that is at most `wanted` and even (int4 packs
    pairs): groups never straddle two output rows."""
    for size in range(min(wanted, in_features), 0, -1):
        if in_features % size == 0 and size % 2 == 0:
            return size
    return in_features  # odd: one group per row (int8 only)


class QuantizedLinear(torch.nn.Module):
    def __init__(self, linear: torch.nn.Linear, bits: int = 8, group_size: int = 128,
                 compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.bits, self.compute_dtype = bits, compute_dtype
        self.group_size = row_group_size(linear.in_features, group_size)
        packed, scales, offsets = quantize(linear.weight.detach().float(), self.group_size, bits)
        self.register_buffer("packed_weight", packed)
        self.register_buffer("scales", scales)
        self.register_buffer("offsets", offsets)
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach().to(compute_dtype),
                                                                        requires_grad=False)
        self._weight: torch.Tensor | None = None  # dequantized copy, reused call to call

    def dequantized_weight(self) -> torch.Tensor:
        if self._weight is None or self._weight.device != self.packed_weight.device:
            self._weight = torch.empty(self.out_features * self.in_features, dtype=self.compute_dtype,
                                       device=self.packed_weight.device)
        return dequantize(self.packed_weight, self.scales, self.offsets, self.group_size, self.bits,
                          out=self._weight).view(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x.to(self.compute_dtype), self.dequantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}")
