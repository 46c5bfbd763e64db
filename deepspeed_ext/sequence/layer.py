"""Ulysses sequence parallelism (DeepSpeed's deepspeed.sequence.layer).

Each rank of a sequence-parallel group holds a slice of the sequence. Attention needs the
whole sequence, but each head is independent, so an all-to-all swaps "my sequence slice of
every head" for "every position of my share of the heads"; the local attention runs on
that; a second all-to-all swaps back. Each all-to-all's backward is the opposite all-to-all.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def single_all_to_all(input: torch.Tensor, scatter_idx: int, gather_idx: int, batch_dim_idx=None,
                      group=None) -> torch.Tensor:
    """Cut `input` into P equal pieces along scatter_idx, send piece r to rank r of the group,
    and join what arrives along gather_idx in rank order (P = the group's size). batch_dim_idx
    is accepted for DeepSpeed's signature; the layout follows from the two indices alone."""
    world = dist.get_world_size(group)
    if world == 1:
        return input
    scatter_idx, gather_idx = scatter_idx % input.dim(), gather_idx % input.dim()
    if scatter_idx == gather_idx:
        raise ValueError(f"scatter_idx and gather_idx must differ, both are {scatter_idx}")
    if input.shape[scatter_idx] % world:
        raise ValueError(f"dimension {scatter_idx} (size {input.shape[scatter_idx]}) must divide evenly among "
                         f"the {world} ranks of the sequence-parallel group")
    pieces = input.movedim(scatter_idx, 0)
    pieces = pieces.reshape(world, pieces.shape[0] // world, *pieces.shape[1:]).contiguous()
    received = torch.empty_like(pieces)
    dist.all_to_all_single(received, pieces, group=group)  # received[r]: rank r's piece for this rank
    # back to input's layout with the sending rank as an extra dim just before gather_idx, then merged into it
    joined = received.movedim(1, scatter_idx + 1).movedim(0, gather_idx)
    shape = list(joined.shape)
    return joined.reshape(shape[:gather_idx] + [shape[gather_idx] * shape[gather_idx + 1]] + shape[gather_idx + 2:])


class _SeqAllToAll(torch.autograd.Function):
    """single_all_to_all with its inverse as the backward."""

    @staticmethod
    def forward(ctx, group, input: torch.Tensor, scatter_idx: int, gather_idx: int, batch_dim_idx=None):
        ctx.group, ctx.scatter_idx, ctx.gather_idx = group, scatter_idx, gather_idx
        return single_all_to_all(input, scatter_idx, gather_idx, batch_dim_idx, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, single_all_to_all(grad.contiguous(), ctx.gather_idx, ctx.scatter_idx, None, ctx.group), \
            None, None, None


class DistributedAttention(torch.nn.Module):
    """Wraps a local attention (q, k, v -> context) for sequence-sharded inputs.

    q, k and v arrive split along the sequence dimension (gather_idx) with all heads
    (scatter_idx); local_attention sees the whole sequence for 1/P of the heads; the output
    leaves split along the sequence again. With the default indices the layout is
    (sequence, batch, heads, head_dim); for (batch, sequence, heads, head_dim) use
    scatter_idx=2, gather_idx=1. The head count must divide by the group size."""

    def __init__(self, local_attention: torch.nn.Module, sequence_process_group, scatter_idx: int = 2,
                 gather_idx: int = 0, sp_stream=None, num_kv_heads: int | None = None) -> None:
        super().__init__()
        if sp_stream is not None:
            raise ValueError("DistributedAttention(sp_stream=...): overlapping the all-to-all on a side stream is "
                             "not supported by deepspeed_ext; leave sp_stream=None")
        self.local_attn = local_attention
        self.spg = sequence_process_group
        self.scatter_idx, self.gather_idx = scatter_idx, gather_idx
        self.num_kv_heads = num_kv_heads

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, batch_dim_idx=None,
                rotary_pos_emb=None, *args, **kwargs) -> torch.Tensor:
        if rotary_pos_emb is not None:
            raise ValueError("DistributedAttention(rotary_pos_emb=...) is not supported by deepspeed_ext: apply the "
                             "rotary embedding inside local_attention")
        heads = query.shape[self.scatter_idx]
        world = dist.get_world_size(self.spg)
        if heads % world or key.shape[self.scatter_idx] % world:
            raise ValueError(f"Ulysses attention needs the query and key/value head counts ({heads}, "
                             f"{key.shape[self.scatter_idx]}) to divide by the sequence-parallel size {world}")
        q, k, v = (_SeqAllToAll.apply(self.spg, t, self.scatter_idx, self.gather_idx, batch_dim_idx)
                   for t in (query, key, value))
        context = self.local_attn(q, k, v, *args, **kwargs)
        return _SeqAllToAll.apply(self.spg, context, self.gather_idx, self.scatter_idx, batch_dim_idx)
