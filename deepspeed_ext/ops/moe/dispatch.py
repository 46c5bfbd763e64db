"""The MoE op as differentiable torch ops: token rows into expert-buffer slots and back.

    buffer = dispatch(x, slots, num_slots)          (num_slots, hidden): slot s holds its token's row
    out    = combine(y, slots, weights)             (tokens, hidden): sum of weight * y[slot] per token
    dots   = route_dots(a, b, slots)                (tokens, k) fp32: <a[token], b[slot]>

slots is a (tokens, k) int64 routing (-1: dropped), weights fp32 of its shape. Each op's
gradient is written with the other two, so backward never builds a one-hot tensor either.
"""

from __future__ import annotations

import functools

import torch

from deepspeed_ext.ops.op_builder import MoEBuilder
from deepspeed_ext.ops.op_loading import check_dense, check_one_device

_LIB = "deepspeed_ext::"


@functools.cache
def moe_ops():
    """torch.ops.deepspeed_ext with the MoE ops loaded (prebuilt or JIT), fakes and autograd registered."""
    ops = MoEBuilder().load()
    _register_python_parts(ops)
    return ops


def _register_python_parts(ops) -> None:
    @torch.library.register_fake(_LIB + "moe_dispatch")
    def _(x, slots, num_slots, weights):
        check_one_device("moe_dispatch", x, slots, weights)
        return x.new_empty((num_slots, x.shape[1]))

    @torch.library.register_fake(_LIB + "moe_combine")
    def _(y, slots, weights):
        check_one_device("moe_combine", y, slots, weights)
        return y.new_empty((slots.shape[0], y.shape[1]))

    @torch.library.register_fake(_LIB + "moe_route_dots")
    def _(a, b, slots):
        check_one_device("moe_route_dots", a, b, slots)
        return a.new_empty(slots.shape, dtype=torch.float32)

    # out[s] = w * x[t] for the route (t, j) given slot s
    def dispatch_setup(ctx, inputs, output):
        x, slots, _, weights = inputs
        ctx.save_for_backward(x if ctx.needs_input_grad[3] else None, slots, weights)

    def dispatch_backward(ctx, grad):
        x, slots, weights = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = ops.moe_combine(grad, slots, weights) if ctx.needs_input_grad[0] else None
        grad_weights = ops.moe_route_dots(x, grad, slots) if ctx.needs_input_grad[3] else None
        return grad_x, None, None, grad_weights

    torch.library.register_autograd(_LIB + "moe_dispatch", dispatch_backward, setup_context=dispatch_setup)

    # out[t] = sum_j w[t, j] * y[slot(t, j)]
    def combine_setup(ctx, inputs, output):
        y, slots, weights = inputs
        ctx.num_slots = y.shape[0]
        ctx.save_for_backward(y if ctx.needs_input_grad[2] else None, slots, weights)

    def combine_backward(ctx, grad):
        y, slots, weights = ctx.saved_tensors
        grad = grad.contiguous()
        grad_y = ops.moe_dispatch(grad, slots, ctx.num_slots, weights) if ctx.needs_input_grad[0] else None
        grad_weights = ops.moe_route_dots(grad, y, slots) if ctx.needs_input_grad[2] else None
        return grad_y, None, grad_weights

    torch.library.register_autograd(_LIB + "moe_combine", combine_backward, setup_context=combine_setup)

    # dots[t, j] = <a[t], b[slot(t, j)]>
    def dots_setup(ctx, inputs, output):
        a, b, slots = inputs
        ctx.num_slots = b.shape[0]
        ctx.save_for_backward(a, b, slots)

    def dots_backward(ctx, grad):
        a, b, slots = ctx.saved_tensors
        grad = grad.contiguous()
        grad_a = ops.moe_combine(b, slots, grad) if ctx.needs_input_grad[0] else None
        grad_b = ops.moe_dispatch(a, slots, ctx.num_slots, grad) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None

    torch.library.register_autograd(_LIB + "moe_route_dots", dots_backward, setup_context=dots_setup)


def _ops():
    # Traced code cannot load a library: the MoE layer loads it when built.
    return torch.ops.deepspeed_ext if torch.compiler.is_compiling() else moe_ops()


def dispatch(x: torch.Tensor, slots: torch.Tensor, num_slots: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The (num_slots, hidden) expert buffer: slot s holds x's row of the route given s (times
    its weight, if weights are given); slots no route has are zeros. Each slot may be given
    once; -1 marks a dropped route."""
    check_dense("moe dispatch", [("x", x), ("slots", slots)])
    return _ops().moe_dispatch(x.contiguous(), slots.contiguous(), num_slots,
                               None if weights is None else weights.contiguous())


def combine(y: torch.Tensor, slots: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(tokens, hidden), in y's dtype: each token's sum over its routes of weight * y[slot],
    summed in fp32 in route order (dropped routes add nothing; no weights: weight 1)."""
    check_dense("moe combine", [("y", y), ("slots", slots)])
    return _ops().moe_combine(y.contiguous(), slots.contiguous(), None if weights is None else weights.contiguous())


def route_dots(a: torch.Tensor, b: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """(tokens, k) fp32: the dot product of a's token row with b's slot row, per route (0 if dropped)."""
    check_dense("moe route_dots", [("a", a), ("b", b), ("slots", slots)])
    return _ops().moe_route_dots(a.contiguous(), b.contiguous(), slots.contiguous())
