"""The MoE token dispatch / combine op (what deepspeed_ext.moe's layer moves tokens with).

    buffer = dispatch(x, slots, experts * capacity)   tokens into their expert-buffer slots
    out = combine(expert_out, slots, gate_weights)    and back, weighted by the gate
"""

from .dispatch import combine, dispatch, moe_ops, route_dots

__all__ = ["combine", "dispatch", "moe_ops", "route_dots"]
