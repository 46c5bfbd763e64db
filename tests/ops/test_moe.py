"""The MoE op against PyTorch references: dispatch and combine equal the one-hot einsum
formulation, combine equals route-ordered fp32 sums bit for bit, every SIMD level matches the
scalar one bit for bit, gradients match autograd through the reference, opcheck, and the errors."""

from __future__ import annotations

import os

import pytest
import torch

from deepspeed_ext.ops.moe import combine, dispatch, moe_ops, route_dots
from deepspeed_ext.ops.op_builder import SIMD_LEVELS, cpu_simd_level

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def routing(tokens: int, experts: int, capacity: int, k: int, seed: int = 0):
    """A random routing: k distinct experts a token, positions in token order, over capacity dropped."""
    g = torch.Generator().manual_seed(seed)
    chosen = torch.stack([torch.randperm(experts, generator=g)[:k] for _ in range(tokens)])
    slots = torch.full((tokens, k), -1, dtype=torch.long)
    filled = [0] * experts
    for route in range(k):
        for token in range(tokens):
            expert = int(chosen[token, route])
            if filled[expert] < capacity:
                slots[token, route] = expert * capacity + filled[expert]
                filled[expert] += 1
    weights = torch.rand(tokens, k, generator=g) * (slots >= 0)
    return slots, weights


def one_hot(slots: torch.Tensor, num_slots: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(tokens, num_slots) fp32: the dense dispatch mask (or combine weights)."""
    dense = torch.zeros(slots.shape[0], num_slots + 1)
    values = torch.ones_like(slots, dtype=torch.float32) if weights is None else weights
    dense.scatter_add_(1, torch.where(slots >= 0, slots, num_slots), values)
    return dense[:, :-1]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_dispatch_and_combine_match_the_einsum_formulation(dtype, k):
    tokens, experts, capacity, hidden = 40, 6, 9, 37
    slots, weights = routing(tokens, experts, capacity, k)
    x = torch.randn(tokens, hidden).to(dtype)
    buffer = dispatch(x, slots, experts * capacity)
    assert torch.equal(buffer, torch.einsum("sn,sm->nm", one_hot(slots, experts * capacity), x.float()).to(dtype))
    y = torch.randn(experts * capacity, hidden).to(dtype)
    out = combine(y, slots, weights)
    dense = torch.einsum("sn,nm->sm", one_hot(slots, experts * capacity, weights), y.float())
    tolerance = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out.float(), dense, atol=tolerance, rtol=tolerance)
    ordered = torch.zeros(tokens, hidden)  # the op's own rule: fp32, route order, one rounding at the end
    for route in range(k):
        kept = slots[:, route] >= 0
        ordered[kept] = ordered[kept] + weights[kept, route, None] * y.float()[slots[kept, route]]
    assert torch.equal(out, ordered.to(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_weighted_dispatch_and_route_dots(dtype):
    slots, weights = routing(30, 4, 6, 2, seed=3)
    x = torch.randn(30, 50).to(dtype)
    buffer = dispatch(x, slots, 24, weights)
    expected = torch.zeros(24, 50, dtype=dtype)
    kept = slots >= 0
    expected[slots[kept]] = (weights[kept, None] * x.float()[kept.nonzero()[:, 0]]).to(dtype)
    assert torch.equal(buffer, expected)
    y = torch.randn(24, 50).to(dtype)
    dots = route_dots(x, y, slots)
    reference = torch.where(kept, (x.double()[:, None, :] * y.double()[slots.clamp(min=0)]).sum(-1), 0.0)
    torch.testing.assert_close(dots.double(), reference, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_match_autograd_through_the_reference(dtype):
    slots, weights = routing(24, 4, 5, 2, seed=5)
    x = torch.randn(24, 33).to(dtype).requires_grad_()
    w = weights.clone().requires_grad_()
    out = combine(torch.tanh(dispatch(x, slots, 20).float()).to(dtype), slots, w)
    grad = torch.randn_like(out)
    out.backward(grad)
    x_ref = x.detach().float().requires_grad_()
    w_ref = weights.clone().requires_grad_()
    buffer = torch.einsum("sn,sm->nm", one_hot(slots, 20), x_ref)
    ref = torch.einsum("sn,nm->sm", one_hot(slots, 20, w_ref), torch.tanh(buffer))
    ref.backward(grad.float())
    tolerance = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(x.grad.float(), x_ref.grad, atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(w.grad, w_ref.grad, atol=tolerance, rtol=tolerance)


def test_every_simd_level_writes_the_scalar_bytes(monkeypatch):
    levels = SIMD_LEVELS[: SIMD_LEVELS.index(cpu_simd_level()) + 1]
    slots, weights = routing(64, 8, 10, 2, seed=7)
    results = {}
    for level in levels:
        monkeypatch.setenv("DS_SIMD", level)
        for dtype in DTYPES:
            for hidden in (1, 15, 16, 37, 1024):
                g = torch.Generator().manual_seed(hidden)
                x = torch.randn(64, hidden, generator=g).to(dtype)
                y = torch.randn(80, hidden, generator=g).to(dtype)
                results.setdefault((dtype, hidden), []).append(
                    (dispatch(x, slots, 80, weights), combine(y, slots, weights), route_dots(x, y, slots)))
    for outputs in results.values():
        for other in outputs[1:]:
            for mine, scalar in zip(other, outputs[0]):
                assert torch.equal(mine.view(torch.uint8) if mine.dtype != torch.float32 else mine.view(torch.int32),
                                   scalar.view(torch.uint8) if scalar.dtype != torch.float32 else scalar.view(torch.int32))
    assert moe_ops().moe_simd_level() == os.environ.get("DS_SIMD", levels[-1])


def test_opcheck():
    ops = moe_ops()
    slots, weights = routing(12, 3, 5, 2, seed=1)
    x = torch.randn(12, 8, requires_grad=True)
    y = torch.randn(15, 8, requires_grad=True)
    torch.library.opcheck(ops.moe_dispatch, (x, slots, 15, weights.requires_grad_()))
    torch.library.opcheck(ops.moe_combine, (y, slots, weights))
    torch.library.opcheck(ops.moe_combine, (y, slots, None))
    torch.library.opcheck(ops.moe_route_dots, (x, y, slots))


def test_compiles():
    slots, weights = routing(16, 4, 4, 1, seed=2)
    x = torch.randn(16, 8)

    @torch.compile(backend="aot_eager", fullgraph=True)
    def layer(x, slots, weights):
        return combine(dispatch(x, slots, 16) * 2, slots, weights)

    torch.testing.assert_close(layer(x, slots, weights), combine(dispatch(x, slots, 16) * 2, slots, weights))


def test_bad_input_is_refused_with_a_message():
    x = torch.randn(4, 8)
    with pytest.raises(RuntimeError, match="outside the 6 expert-buffer slots"):
        dispatch(x, torch.tensor([[0], [1], [6], [2]]), 6)
    with pytest.raises(RuntimeError, match="slot 1 is given to two routes"):
        dispatch(x, torch.tensor([[0], [1], [1], [2]]), 6)
    with pytest.raises(RuntimeError, match="slots must be a contiguous 2-D"):
        dispatch(x, torch.tensor([[0], [1], [2], [3]], dtype=torch.int32), 6)
    with pytest.raises(RuntimeError, match="slots has 3 rows for 4 tokens"):
        dispatch(x, torch.tensor([[0], [1], [2]]), 6)
    with pytest.raises(RuntimeError, match="weights must be a contiguous float32"):
        combine(torch.randn(6, 8), torch.tensor([[0], [1], [2], [3]]), torch.ones(4, 2))
    with pytest.raises(RuntimeError, match="outside the 6"):
        combine(torch.randn(6, 8), torch.tensor([[0], [1], [2], [9]]))
    with pytest.raises(RuntimeError, match="has dtype Long"):
        combine(torch.ones(6, 8, dtype=torch.long), torch.tensor([[0], [1], [2], [3]]))
    with pytest.raises(RuntimeError, match="meta"):
        dispatch(x.to("meta"), torch.tensor([[0], [1], [2], [3]]), 6)
