"""The gradient reducer's two transports (bucket all-reduce, sectioned reduce-scatter) give
every rank the same sums of its own slice, on 3 gloo ranks with buckets smaller than a
param, in stage 1 (once) and stage 2 (every micro-batch) modes."""

from __future__ import annotations

from tests.ranks import run_ranks

SCRIPT = """
import json, os, torch
import deepspeed_ext as deepspeed
from deepspeed_ext.runtime.zero.grad_reduce import ShardedGradReducer
from deepspeed_ext.runtime.zero.groups import flat_group
deepspeed.init_distributed(verbose=False)
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
shards = {}
for use_reduce_scatter in (False, True):
    for every_micro_step in (False, True):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(n)) for n in (70, 3, 130, 1)]
        group = flat_group(params, {}, world, rank, torch.device("cpu"))
        reducer = ShardedGradReducer([group], world, rank, bucket_size=50, every_micro_step=every_micro_step,
                                     use_reduce_scatter=use_reduce_scatter)
        for micro in range(2):
            if micro == 1:
                reducer.arm()
            loss = sum(((rank + 1 + micro) * p * p).sum() for p in params)
            loss.backward()
            if reducer.armed:
                reducer.finish()
        shards[f"{use_reduce_scatter}-{every_micro_step}"] = group.grad_shard.tolist()
        part = group.layout.partition(rank)
        expected = torch.zeros(part.end - part.start)
        for index, first, count, offset in part.pieces:  # mean over ranks of the summed micro-batches
            total = sum(2 * (r + 1) + 2 * (r + 2) for r in range(world)) / world
            expected[offset:offset + count] = total * params[index].detach()[first:first + count]
        shards["expected"] = expected.tolist()
print(json.dumps(shards))
"""


def test_both_transports_give_each_rank_its_sums():
    for shards in run_ranks(SCRIPT, 3):
        expected = shards.pop("expected")
        for name, values in shards.items():
            assert len(values) == len(expected), name
            assert max(abs(a - b) for a, b in zip(values, expected)) < 1e-5, name
