"""What DeepSpeed keeps in deepspeed.utils: the logger, per-param access to ZeRO's training
state, process groups, ZeRO-3 leaf modules, and tools for saved checkpoints (zero_to_fp32)."""

from deepspeed_ext.runtime.zero.leaf_modules import get_z3_leaf_modules, set_z3_leaf_modules, unset_z3_leaf_modules

from . import groups, zero_to_fp32
from .logging import log_dist, logger, set_log_level_from_string
from .tensor_fragment import (
    safe_get_full_fp32_param,
    safe_get_full_grad,
    safe_get_full_optimizer_state,
    safe_get_local_fp32_param,
    safe_get_local_grad,
    safe_get_local_optimizer_state,
    safe_set_full_fp32_param,
    safe_set_full_grad,
    safe_set_full_optimizer_state,
    safe_set_local_fp32_param,
    safe_set_local_grad,
    safe_set_local_optimizer_state,
)

__all__ = ["get_z3_leaf_modules", "groups", "log_dist", "logger", "safe_get_full_fp32_param", "safe_get_full_grad",
           "safe_get_full_optimizer_state", "safe_get_local_fp32_param", "safe_get_local_grad",
           "safe_get_local_optimizer_state", "safe_set_full_fp32_param", "safe_set_full_grad",
           "safe_set_full_optimizer_state", "safe_set_local_fp32_param", "safe_set_local_grad",
           "safe_set_local_optimizer_state", "set_log_level_from_string", "set_z3_leaf_modules",
           "unset_z3_leaf_modules", "zero_to_fp32"]
