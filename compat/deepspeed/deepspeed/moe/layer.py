from deepspeed_ext.moe.layer import MoE

__all__ = ["MoE"]
