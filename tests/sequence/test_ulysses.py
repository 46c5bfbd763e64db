"""Ulysses sequence parallelism: DistributedAttention over 2 gloo ranks, each holding half of
the sequence, gives the plain attention's outputs and gradients for its half."""

import math

import pytest
import torch

import deepspeed_ext
from deepspeed_ext.sequence import DistributedAttention, single_all_to_all
from deepspeed_ext.utils import groups
from tests.ranks import run_ranks

SEQUENCE, BATCH, HEADS, HEAD_DIM = 8, 2, 4, 6


def attention(q, k, v, sequence_dim: int):
    """Plain softmax attention over the whole sequence, any layout with heads at dim 2."""
    q, k, v = (t.movedim(sequence_dim, 0) for t in (q, k, v))  # (s, b, h, d)
    scores = torch.einsum("sbhd,tbhd->bhst", q, k) / math.sqrt(q.shape[-1])
    out = torch.einsum("bhst,tbhd->sbhd", scores.softmax(-1), v)
    return out.movedim(0, sequence_dim)


def ulysses_on_ranks(sequence_dim: int):
    deepspeed_ext.init_distributed(verbose=False)
    groups.initialize_sequence_parallel(2)
    group = groups._get_sequence_parallel_group()
    rank, world = groups._get_sequence_parallel_rank(), groups._get_sequence_parallel_world_size()
    generator = torch.Generator().manual_seed(0)
    shape = [BATCH, SEQUENCE, HEADS, HEAD_DIM] if sequence_dim == 1 else [SEQUENCE, BATCH, HEADS, HEAD_DIM]
    q, k, v, weights = (torch.randn(shape, generator=generator) for _ in range(4))  # the same on every rank
    whole = [t.clone().requires_grad_() for t in (q, k, v)]
    expected = attention(*whole, sequence_dim)
    (expected * weights).sum().backward()
    part = SEQUENCE // world
    mine = [t.narrow(sequence_dim, rank * part, part).clone().requires_grad_() for t in (q, k, v)]
    layer = DistributedAttention(lambda a, b, c: attention(a, b, c, sequence_dim), group, scatter_idx=2,
                                 gather_idx=sequence_dim)
    out = layer(*mine, batch_dim_idx=1 - sequence_dim)
    (out * weights.narrow(sequence_dim, rank * part, part)).sum().backward()
    return (torch.allclose(out, expected.narrow(sequence_dim, rank * part, part), atol=1e-6),
            [torch.allclose(m.grad, w.grad.narrow(sequence_dim, rank * part, part), atol=1e-6)
             for m, w in zip(mine, whole)])


@pytest.mark.parametrize("sequence_dim", [0, 1], ids=["seq-first", "batch-first"])
def test_distributed_attention_equals_plain_attention(sequence_dim):
    assert run_ranks(ulysses_on_ranks, 2, sequence_dim) == [(True, [True, True, True])] * 2


def all_to_all_round_trip():
    deepspeed_ext.init_distributed(verbose=False)
    x = torch.arange(2 * 4 * 6, dtype=torch.float32).view(2, 4, 6) + 100 * deepspeed_ext.comm.get_rank()
    swapped = single_all_to_all(x, scatter_idx=1, gather_idx=0)
    back = single_all_to_all(swapped, scatter_idx=0, gather_idx=1)
    with pytest.raises(ValueError, match="must divide evenly"):
        single_all_to_all(torch.zeros(2, 3), scatter_idx=1, gather_idx=0)
    with pytest.raises(ValueError, match="head counts"):
        DistributedAttention(lambda *t: t[0], None)(*(torch.zeros(2, 1, 3, 4),) * 3)
    return tuple(swapped.shape), torch.equal(back, x)


def test_all_to_all_shapes_round_trip_and_errors():
    assert run_ranks(all_to_all_round_trip, 2) == [((4, 2, 6), True)] * 2
