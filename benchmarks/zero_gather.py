"""ZeRO flat-buffer copies next to torch's own, side by side in one run.

    python benchmarks/zero_gather.py [--threads 1,2] [--repeats 5]

flatten: our flatten_into against torch._utils._flatten_dense_tensors (torch.cat);
unflatten: our unflatten_from (flat buffer -> separate tensors) against torch._foreach_copy_
of the views. Workloads: a GPT-2 small's 148 fp32 tensors (124M params) and 2,000 tensors of
1,000 elements. Prints GB/s (bytes read + written) and the ratio to torch, next to the copy
bandwidth of one large torch copy_ measured in the same run.
"""

from __future__ import annotations

import argparse

import torch
from fused_adam import gpt2_small_sizes
from timing import best_seconds
from torch._utils import _flatten_dense_tensors

from deepspeed_ext.ops.zero_gather import FlatLayout, unflatten, zero_gather_ops


def cases(ops, tensors, flat, offsets, views) -> dict:
    """name -> (ours, torch's) for one workload."""
    return {
        "flatten": (lambda: ops.flatten_into(flat, tensors, offsets), lambda: _flatten_dense_tensors(tensors)),
        "unflatten": (lambda: ops.unflatten_from(flat, tensors, offsets),
                      lambda: torch._foreach_copy_(tensors, views)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ops = zero_gather_ops()
    workloads = {"gpt2-small (148 tensors)": gpt2_small_sizes(), "2,000 x 1,000": [1000] * 2000}
    print(f"{'workload':>26} {'thr':>3} {'copy':>10} {'ours GB/s':>10} {'torch GB/s':>11} {'ratio':>6} {'copy_ GB/s':>11}")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        big_a, big_b = torch.rand(64 * 2**20), torch.empty(64 * 2**20)
        bound = 8 * big_a.numel() / best_seconds(lambda a=big_a, b=big_b: b.copy_(a), args.repeats)
        for workload, sizes in workloads.items():
            tensors = [torch.randn(n) for n in sizes]
            layout = FlatLayout.of(tensors)
            flat = torch.empty(layout.total)
            offsets = list(layout.offsets)
            moved = 8 * sum(sizes)  # every element read once and written once
            for name, (ours, theirs) in cases(ops, tensors, flat, offsets, unflatten(flat, layout)).items():
                best_ours, best_theirs = float("inf"), float("inf")
                for _ in range(2):  # take turns, so noise hits both alike
                    best_ours = min(best_ours, best_seconds(ours, args.repeats))
                    best_theirs = min(best_theirs, best_seconds(theirs, args.repeats))
                print(f"{workload:>26} {threads:>3} {name:>10} {moved / best_ours / 1e9:>10.1f} "
                      f"{moved / best_theirs / 1e9:>11.1f} {best_theirs / best_ours:>6.2f} {bound / 1e9:>11.1f}")


if __name__ == "__main__":
    main()
