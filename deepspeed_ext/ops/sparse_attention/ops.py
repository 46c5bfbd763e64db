"""The sparse attention ops as differentiable torch ops: fake impls (torch.compile traces them)
and autograd formulas written with the same kernels.

    scores = sdd(q, k, lut, block)                 q . k^T on the layout's blocks (fp32)
    probs  = softmax(scores, lut, ...)             row softmax over each row's blocks
    out    = dsd(probs, v, lut, block)             probs . v
    out    = sparse_attention(q, k, v, lut, ...)   all three, block row by block row, the scores
                                                   never stored; backward recomputes them

`block_sparse_attention` (what SparseSelfAttention runs) uses the fused op.
"""

from __future__ import annotations

import functools

import torch

from deepspeed_ext.ops.op_builder import SparseAttentionBuilder
from deepspeed_ext.ops.op_loading import check_one_device

from .lut import nonzero_blocks

MASK_MODES = {"add": 1, "mul": 2}


def scores_dtype(input_dtype: torch.dtype) -> torch.dtype:
    """Scores and probabilities are fp32 (fp64 for fp64 inputs, which gradcheck uses)."""
    return torch.float64 if input_dtype == torch.float64 else torch.float32


@functools.cache
def sparse_attention_ops():
    ops = SparseAttentionBuilder().load()
    _register_python_parts()
    return ops


def _register_python_parts() -> None:
    lib = "deepspeed_ext::"

    @torch.library.register_fake(lib + "sparse_sdd")
    def _(a, b, lut, block):
        check_one_device("sparse_sdd", a, b, lut)
        nnz = nonzero_blocks(lut, a.shape[1], a.shape[2] // block)
        return a.new_empty((a.shape[0], nnz, block, block), dtype=scores_dtype(a.dtype))

    @torch.library.register_fake(lib + "sparse_dsd")
    def _(s, v, lut, block, transpose):
        check_one_device("sparse_dsd", s, v, lut)
        return torch.empty_like(v)

    @torch.library.register_fake(lib + "sparse_softmax")
    def _(scores, lut, heads, seq, block, scale, rpe, key_padding_mask, attn_mask, kp_mode, attn_mode, causal):
        check_one_device("sparse_softmax", scores, lut, rpe, key_padding_mask, attn_mask)
        return torch.empty_like(scores)

    @torch.library.register_fake(lib + "sparse_softmax_backward")
    def _(probs, grad, lut, heads, seq, block, scale):
        check_one_device("sparse_softmax_backward", probs, grad, lut)
        return torch.empty_like(probs)

    @torch.library.register_fake(lib + "sparse_attention")
    def _(q, k, v, lut, block, scale, rpe, key_padding_mask, attn_mask, kp_mode, attn_mode, causal):
        check_one_device("sparse_attention", q, k, v, lut, rpe, key_padding_mask, attn_mask)
        return torch.empty_like(q)

    @torch.library.register_fake(lib + "sparse_attention_backward")
    def _(grad, q, k, v, lut, block, scale, rpe, key_padding_mask, attn_mask, kp_mode, attn_mode, causal):
        check_one_device("sparse_attention_backward", grad, q, k, v, lut, rpe, key_padding_mask, attn_mask)
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    ops = torch.ops.deepspeed_ext

    def attention_setup(ctx, inputs, output):
        q, k, v, lut, *rest = inputs
        ctx.save_for_backward(q, k, v, lut)
        ctx.rest = rest  # block, scale, rpe, masks, modes, causal (masks and rpe get no gradient)

    def attention_backward(ctx, grad):
        q, k, v, lut = ctx.saved_tensors
        dq, dk, dv = ops.sparse_attention_backward(grad.contiguous(), q, k, v, lut, *ctx.rest)
        return (dq, dk, dv) + (None,) * 9

    torch.library.register_autograd(lib + "sparse_attention", attention_backward, setup_context=attention_setup)

    def sdd_setup(ctx, inputs, output):
        a, b, lut, block = inputs
        ctx.save_for_backward(a, b, lut)
        ctx.block = block

    def sdd_backward(ctx, grad):
        a, b, lut = ctx.saved_tensors
        grad = grad.contiguous()
        return (ops.sparse_dsd(grad, b, lut, ctx.block, False), ops.sparse_dsd(grad, a, lut, ctx.block, True),
                None, None)

    torch.library.register_autograd(lib + "sparse_sdd", sdd_backward, setup_context=sdd_setup)

    def dsd_setup(ctx, inputs, output):
        s, v, lut, block, transpose = inputs
        ctx.save_for_backward(s, v, lut)
        ctx.block, ctx.transpose = block, transpose

    def dsd_backward(ctx, grad):
        s, v, lut = ctx.saved_tensors
        grad = grad.contiguous().to(v.dtype)
        # out[r] = sum_c s[r, c] v[c]: ds[r, c] = grad[r] v[c]^T, dv[c] = sum_r s[r, c]^T grad[r]
        # transposed, out[c] = sum_r s[r, c]^T v[r]: ds[r, c] = v[r] grad[c]^T, dv[r] = sum_c s[r, c] grad[c]
        ds = ops.sparse_sdd(v, grad, lut, ctx.block) if ctx.transpose else ops.sparse_sdd(grad, v, lut, ctx.block)
        return ds, ops.sparse_dsd(s, grad, lut, ctx.block, not ctx.transpose), None, None, None

    torch.library.register_autograd(lib + "sparse_dsd", dsd_backward, setup_context=dsd_setup)

    def softmax_setup(ctx, inputs, output):
        ctx.save_for_backward(output, inputs[1])
        ctx.heads, ctx.seq, ctx.block, ctx.scale = inputs[2], inputs[3], inputs[4], inputs[5]

    def softmax_backward(ctx, grad):
        probs, lut = ctx.saved_tensors
        scores_grad = ops.sparse_softmax_backward(probs, grad.contiguous(), lut, ctx.heads, ctx.seq, ctx.block,
                                                  ctx.scale)
        return (scores_grad,) + (None,) * 11

    torch.library.register_autograd(lib + "sparse_softmax", softmax_backward, setup_context=softmax_setup)


def block_sparse_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, lut: torch.Tensor, block: int,
                           scale: float, rpe: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None,
                           attn_mask: torch.Tensor | None = None, key_padding_mask_mode: str = "add",
                           attn_mask_mode: str = "mul", causal: bool = False) -> torch.Tensor:
    """softmax(q k^T * scale + rpe + masks) v on the layout's blocks; (batch, heads, seq, head_dim).
    rpe (heads, seq, seq), key_padding_mask (batch, seq) and attn_mask (seq, seq) are contiguous
    tensors of the scores' dtype (see scores_dtype); SparseSelfAttention prepares them."""
    # Traced code cannot load a library (SparseSelfAttention loads it when built).
    ops = torch.ops.deepspeed_ext if torch.compiler.is_compiling() else sparse_attention_ops()
    for name, mode in (("key_padding_mask_mode", key_padding_mask_mode), ("attn_mask_mode", attn_mask_mode)):
        if mode not in MASK_MODES:
            raise ValueError(f"{name} must be 'add' or 'mul', got {mode!r}")
    return ops.sparse_attention(query.contiguous(), key.contiguous(), value.contiguous(), lut, block, scale, rpe,
                                key_padding_mask, attn_mask, MASK_MODES[key_padding_mask_mode],
                                MASK_MODES[attn_mask_mode], causal)
