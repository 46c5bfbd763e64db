"""Expert parallelism equals one process holding every expert: ep_size 1, 2 and 4 on 4 gloo
ranks give each rank's tokens the outputs, aux loss and gradients that the full layer gives
them (same routing: the same RNG state per rank), top-1 and top-2, with and without dropping,
residual MoE."""

import pytest
import torch
import torch.distributed as dist

from deepspeed_ext import comm
from tests.moe import models
from tests.ranks import run_ranks

WORLD = 4


def tokens_of(rank: int) -> torch.Tensor:
    return torch.randn(3, 8, models.HIDDEN, generator=torch.Generator().manual_seed(100 + rank))


def run_layer(layer, rank: int):
    x = tokens_of(rank).requires_grad_()
    torch.manual_seed(1000 + rank)  # random token selection and gumbel noise: the same draw as the reference
    out, l_aux, counts = layer(x)
    target = torch.randn(out.shape, generator=torch.Generator().manual_seed(200 + rank))
    ((out * target).sum() + l_aux).backward()
    return out.detach(), l_aux.detach(), counts, x.grad


def layer_on_rank(ep_size: int, k: int, drop_tokens: bool, use_residual: bool):
    comm.init_distributed(dist_backend="gloo", verbose=False)
    rank = dist.get_rank()
    layer = models.moe_layer(ep_size, models.ep_rank_of(rank, ep_size), k, drop_tokens, use_residual)
    layer.set_deepspeed_parallelism()
    out, l_aux, counts, x_grad = run_layer(layer, rank)
    first = models.ep_rank_of(rank, ep_size) * layer.num_local_experts
    expert_grads = {first + i: {n: p.grad for n, p in e.named_parameters()}
                    for i, e in enumerate(layer.deepspeed_moe.experts.deepspeed_experts)}
    shared = {n: p.grad for n, p in layer.named_parameters() if "deepspeed_experts" not in n}
    return {"out": out, "l_aux": l_aux, "counts": counts, "x_grad": x_grad, "experts": expert_grads,
            "shared": shared}


@pytest.mark.parametrize("ep_size,k,drop_tokens,use_residual", [
    (1, 1, True, False), (2, 1, True, False), (4, 1, True, False), (2, 2, True, False), (4, 2, False, False),
    (2, 1, False, True), (4, 2, True, True)])
def test_expert_parallel_layer_equals_one_process_with_every_expert(ep_size, k, drop_tokens, use_residual):
    results = run_ranks(layer_on_rank, WORLD, ep_size, k, drop_tokens, use_residual)
    reference = models.moe_layer(1, 0, k, drop_tokens, use_residual)
    expert_sums: dict = {}
    for rank, result in enumerate(results):
        reference.zero_grad()
        out, l_aux, counts, x_grad = run_layer(reference, rank)
        # (without dropping, capacity is the busiest expert over the ep group: wider buffers, same outputs)
        torch.testing.assert_close(result["out"], out, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(result["l_aux"], l_aux)
        assert torch.equal(result["counts"], counts)
        torch.testing.assert_close(result["x_grad"], x_grad, atol=1e-5, rtol=1e-5)
        for name, param in reference.named_parameters():
            if "deepspeed_experts" not in name:
                torch.testing.assert_close(result["shared"][name], param.grad, atol=1e-5, rtol=1e-5)
        for expert_id, expert in enumerate(reference.deepspeed_moe.experts.deepspeed_experts):
            for name, param in expert.named_parameters():
                expert_sums.setdefault((expert_id, name), []).append(param.grad.clone())
    # the ranks holding an expert together hold the gradient every rank's tokens give it
    for (expert_id, name), grads in expert_sums.items():
        held = sum(r["experts"][expert_id][name] for r in results if expert_id in r["experts"])
        torch.testing.assert_close(held, sum(grads), atol=1e-4, rtol=1e-5)
