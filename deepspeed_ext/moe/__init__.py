"""Mixture of Experts with expert parallelism (deepspeed.moe): the MoE layer, its gates, and
the helpers for optimizer param groups.

    layer = MoE(hidden_size=1024, expert=mlp, num_experts=16, ep_size=4, k=2)
    output, l_aux, exp_counts = layer(hidden_states)       # add l_aux (times a coefficient) to the loss
"""

from .experts import Experts
from .gating import TopKGate
from .layer import MoE
from .sharded_moe import MOELayer
from .utils import is_moe_param, split_params_into_different_moe_groups_for_optimizer

__all__ = ["Experts", "MOELayer", "MoE", "TopKGate", "is_moe_param", "split_params_into_different_moe_groups_for_optimizer"]
