"""ZeRO's flat buffers: `flatten` many tensors into one aligned, padded buffer, `unflatten`
it back into views, split it into per-rank partitions, and gather partitions across ranks.

    flat, layout = flatten(params, alignment=64, world_size=4)
    views = unflatten(flat, layout)                     # views into flat, shaped like params
    part = layout.partition(rank)                       # the rank's slice and the tensors it covers
    full = gather_partitions(flat[part.start:part.end], layout)   # all-gather across ranks
"""

from .flat import (
    FlatLayout,
    Partition,
    PerTensorLayout,
    flatten,
    gather_partitions,
    round_up,
    unflatten,
    zero_gather_ops,
)

__all__ = ["FlatLayout", "Partition", "PerTensorLayout", "flatten", "gather_partitions", "round_up", "unflatten", "zero_gather_ops"]
