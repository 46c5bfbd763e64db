from deepspeed_ext.ops.quantizer import ds_quantizer

__all__ = ["ds_quantizer"]
