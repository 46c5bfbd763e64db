from deepspeed_ext.moe.experts import Experts

__all__ = ["Experts"]
