"""Group-wise quantization (the quantizer op).

    packed, scales, offsets = quantize(x, group_size=256, bits=8)      # uint8, fp32, fp32
    y = dequantize(packed, scales, offsets, group_size=256, bits=8, dtype=torch.bfloat16, shape=x.shape)
    y = ds_quantizer(x, groups=64, bit_num=8, sr=False, asym=False)  # DeepSpeed's fake-quantize
"""

from .quantizer import dequantize, ds_quantizer, quantize, quantizer_ops

__all__ = ["dequantize", "ds_quantizer", "quantize", "quantizer_ops"]
