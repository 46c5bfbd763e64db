"""MoE dispatch + combine and the whole MoE layer, forward + backward, side by side in one run:
our MoE op next to the one-hot einsum formulation (GShard's, DeepSpeed's before 0.19), and,
with --peer-python, Microsoft DeepSpeed's MoE layer (its index_select dispatch) on the same
shapes, one process each, ep_size 1. Prints times and ratios; asserts nothing.

    python benchmarks/moe.py [--tokens 4096 8192] [--experts 8 16 64] [--k 1 2] [--hidden 1024]
                             [--repeats 3] [--rounds 3]
                             [--peer-python /path/to/python-with-deepspeed]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import best_seconds


def routing_for(tokens: int, experts: int, k: int, hidden: int):
    """A top-k routing from a random gate, as the layer's gate would make it."""
    from deepspeed_ext.moe.gating import top1_routing, top2_routing, topk_routing

    logits = torch.randn(tokens, experts, generator=torch.Generator().manual_seed(0))
    if k == 1:
        return top1_routing(logits, 1.0, 4)
    return top2_routing(logits, 1.0, 4) if k == 2 else topk_routing(logits, k, 1.0, 4)


def dispatch_combine(tokens: int, experts: int, k: int, hidden: int, repeats: int) -> dict:
    """Seconds for dispatch + combine, forward and backward, with the op and with einsum."""
    from deepspeed_ext.ops.moe import combine, dispatch

    routing = routing_for(tokens, experts, k, hidden)
    slots, num_slots = routing.slots, experts * routing.capacity
    weights = routing.weights.detach().requires_grad_()
    x = torch.randn(tokens, hidden, requires_grad=True)
    _, combine_weights, dispatch_mask, _ = routing.dense()
    combine_weights = combine_weights.detach().requires_grad_()
    mask = dispatch_mask.float()

    def ours():
        out = combine(dispatch(x, slots, num_slots) * 2.0, slots, weights)
        out.backward(torch.ones_like(out))

    def einsum():
        buffer = torch.einsum("sec,sm->ecm", mask, x)
        out = torch.einsum("sec,ecm->sm", combine_weights, buffer * 2.0)
        out.backward(torch.ones_like(out))

    return {"ours": best_seconds(ours, repeats), "einsum": best_seconds(einsum, repeats)}


def expert_module(hidden: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden))


def layer_seconds(moe_class, tokens: int, experts: int, k: int, hidden: int, repeats: int) -> float:
    torch.manual_seed(0)
    layer = moe_class(hidden, expert_module(hidden), num_experts=experts, k=k, min_capacity=4)
    x = torch.randn(tokens, hidden, requires_grad=True)

    def step():
        out, l_aux, _ = layer(x)
        (out.sum() + l_aux).backward()

    return best_seconds(step, repeats)


def peer_layer_seconds(shapes: list, repeats: int) -> list:
    """Runs in the peer Python: DeepSpeed's MoE layer on every shape."""
    from deepspeed.moe.layer import MoE

    return [layer_seconds(MoE, *shape, repeats) for shape in shapes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096])
    parser.add_argument("--experts", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peer-python", default=None, help="a Python whose `import deepspeed` is Microsoft's")
    parser.add_argument("--as-peer", default=None, help=argparse.SUPPRESS)  # shapes as JSON: run DeepSpeed's layer
    args = parser.parse_args()
    if args.as_peer is not None:
        print(json.dumps(peer_layer_seconds(json.loads(args.as_peer), args.repeats)))
        return
    from deepspeed_ext.moe import MoE

    shapes = [(t, e, k, args.hidden) for t in args.tokens for e in args.experts for k in args.k]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, hidden {args.hidden}, fp32, forward + backward; "
          f"median of {args.rounds} alternating rounds")
    print(f"{'tokens':>7} {'experts':>7} {'k':>2} | {'op ms':>8} {'einsum ms':>10} {'einsum/op':>9} | "
          f"{'layer ms':>9} {'DeepSpeed ms':>12} {'DS/ours':>7}")
    for shape in shapes:
        rounds = []
        for _ in range(args.rounds):  # ours and the peer take turns, so machine noise hits both
            deepspeed_seconds = peer_run(args.peer_python, shape, args.repeats) if args.peer_python else None
            rounds.append((dispatch_combine(*shape, args.repeats), layer_seconds(MoE, *shape, args.repeats),
                           deepspeed_seconds))
        op = statistics.median(r[0]["ours"] for r in rounds)
        einsum = statistics.median(r[0]["einsum"] for r in rounds)
        ours_layer = statistics.median(r[1] for r in rounds)
        peer = [r[2] for r in rounds if r[2] is not None]
        ds = f"{statistics.median(peer) * 1e3:12.1f} {statistics.median(peer) / ours_layer:7.2f}" if peer else \
            f"{'-':>12} {'-':>7}"
        print(f"{shape[0]:>7} {shape[1]:>7} {shape[2]:>2} | {op * 1e3:8.2f} {einsum * 1e3:10.1f} {einsum / op:9.1f} | "
              f"{ours_layer * 1e3:9.1f} {ds}", flush=True)


def peer_run(python: str, shape: tuple, repeats: int) -> float | None:
    done = subprocess.run([python, __file__, "--as-peer", json.dumps([shape]), "--repeats", str(repeats)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"peer run failed: {done.stderr[-2000:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])[0]


if __name__ == "__main__":
    main()
