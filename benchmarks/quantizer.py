"""Quantize / dequantize throughput of the quantizer op next to a vectorised PyTorch
expression of the same rule and the memory-bandwidth bound, measured side by side.

    python benchmarks/quantizer.py [--sizes 16 64 256] [--group 256] [--threads 1 2]

Columns: ours (allocating its outputs, as `quantize()` does), the torch expression (which
allocates too), the ratio, ours writing into reused buffers (`out=`), and the bound: the
bytes the op must move (read the input, write levels and scales, or the reverse) at the
copy bandwidth torch's `copy_` reaches between reused buffers of the same size in the same
run. Fresh buffers of tens of MB cost page faults (docs/ops/quantizer.md has the figures),
so the bound compares the `out=` column. Target: >= 0.8 of it.
"""

from __future__ import annotations

import argparse

import torch
from timing import best_seconds

from deepspeed_ext.ops.quantizer import dequantize, quantize


def torch_quantize(x: torch.Tensor, group: int):
    """The op's symmetric int8 rule in torch ops (several passes over memory)."""
    groups = x.float().view(-1, group)
    absmax = groups.abs().amax(dim=1, keepdim=True)
    scale = absmax / 127
    levels = torch.round(groups * (127 / absmax)).clamp_(-127, 127).to(torch.int8)
    return levels, scale


def torch_dequantize(levels: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (levels.float() * scale).to(dtype)


def copy_gbps(numel_bytes: int) -> float:
    """Copy bandwidth (bytes read + written per second) on buffers of this size."""
    source = torch.empty(numel_bytes // 4, dtype=torch.float32).fill_(1.0)
    target = torch.empty_like(source)
    return 2 * numel_bytes / best_seconds(lambda: target.copy_(source), 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256], help="millions of elements")
    parser.add_argument("--group", type=int, default=256)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{'elements':>9} {'thr':>3} {'input':>8} {'op':>10} {'ours ms':>8} {'torch ms':>9} {'x torch':>8} "
          f"{'into ms':>8} {'bound ms':>9} {'/ bound':>8}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for millions in args.sizes:
            numel = millions * 2**20
            bandwidth = copy_gbps(numel * 4)
            for dtype in (torch.float32, torch.bfloat16):
                for name, ours_s, peer_s, into_s, moved in measure(numel, dtype, args.group, args.repeats):
                    bound_s = moved / bandwidth
                    print(f"{millions:>8}M {threads:>3} {str(dtype)[6:]:>8} {name:>10} {ours_s * 1e3:>8.2f} "
                          f"{peer_s * 1e3:>9.2f} {peer_s / ours_s:>8.2f} {into_s * 1e3:>8.2f} {bound_s * 1e3:>9.2f} "
                          f"{bound_s / into_s:>8.2f}")


def measure(numel: int, dtype: torch.dtype, group: int, repeats: int):
    """(op, ours s, torch s, ours into reused buffers s, bytes the op moves) for both ops."""
    x = torch.randn(numel, dtype=dtype)
    moved = numel * (x.element_size() + 1) + 8 * (numel // group)  # input, levels, scale + offset
    packed, scales, offsets = quantize(x, group)
    levels, scale = torch_quantize(x, group)
    restored = torch.empty_like(x)
    rows = [
        ("quantize", lambda: quantize(x, group), lambda: torch_quantize(x, group),
         lambda: quantize(x, group, out=(packed, scales, offsets))),
        ("dequantize", lambda: dequantize(packed, scales, offsets, group, dtype=dtype),
         lambda: torch_dequantize(levels, scale, dtype), lambda: dequantize(packed, scales, offsets, group,
                                                                           out=restored)),
    ]
    return [(name, *(best_seconds(run, repeats) for run in runs), moved) for name, *runs in rows]

if __name__ == "__main__":
    main()
