from deepspeed_ext.moe import MoE

from . import experts, layer, sharded_moe, utils  # noqa: F401  (deepspeed.moe.layer.MoE after `import deepspeed`)

__all__ = ["MoE"]
