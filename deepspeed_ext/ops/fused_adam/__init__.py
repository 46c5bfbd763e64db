"""The fused_adam op's optimizer: multi-tensor Adam / AdamW (also importable from
deepspeed_ext.ops.adam, DeepSpeed's module path)."""

from .fused_adam import FusedAdam

__all__ = ["FusedAdam"]
