from deepspeed_ext.moe import MoE

__all__ = ["MoE"]
