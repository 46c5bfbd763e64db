"""Block-sparse attention forward + backward next to dense attention, at seq 1024-8192, 8 heads,
head_dim 64, block 64, for the Fixed, BigBird and BSLongformer layouts.

    python benchmarks/sparse_attention.py [--seqs 1024 2048 4096 8192] [--threads 2] [--no-flex]

Peers, each in a fresh process (so peak RSS is its own): torch's dense
`scaled_dot_product_attention`, and `flex_attention` (compiled, where it runs on this CPU) with
the same block mask. Prints the layout's density, the time of one forward + backward (best of
--repeats), the peak RSS growth, the speedup over dense SDPA and the target 0.7 / density.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time

LAYOUTS = ("fixed", "bigbird", "bslongformer")


def layout_config(name: str, heads: int, block: int):
    from deepspeed_ext.ops.sparse_attention import (
        BigBirdSparsityConfig,
        BSLongformerSparsityConfig,
        FixedSparsityConfig,
    )
    return {"fixed": lambda: FixedSparsityConfig(heads, block),
            "bigbird": lambda: BigBirdSparsityConfig(heads, block, seed=0),
            "bslongformer": lambda: BSLongformerSparsityConfig(heads, block)}[name]()


def worker(kind: str, layout: str, seq: int, heads: int, dim: int, block: int, threads: int, repeats: int) -> dict:
    """Runs in its own process: one kind of attention, timed; peak RSS growth measured."""
    import torch

    torch.set_num_threads(threads)
    config = layout_config(layout, heads, block)
    q, k, v = (torch.randn(1, heads, seq, dim, requires_grad=True) for _ in range(3))
    layout_tensor = config.make_layout(seq)
    if kind == "ours":
        from deepspeed_ext.ops.sparse_attention import SparseSelfAttention

        module = SparseSelfAttention(config, max_seq_length=seq)
        attend = module
    elif kind == "sdpa":
        def attend(q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)
    else:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        allowed = layout_tensor.bool()

        def mask(b, h, q_index, kv_index):
            return allowed[h, q_index // block, kv_index // block]

        block_mask = create_block_mask(mask, 1, heads, seq, seq, device="cpu", BLOCK_SIZE=block)
        compiled = torch.compile(flex_attention)

        def attend(q, k, v):
            return compiled(q, k, v, block_mask=block_mask)

    def step():
        attend(q, k, v).sum().backward()

    step()  # warm-up: builds, compiles, first-touches
    q.grad = k.grad = v.grad = None
    with RssPeak() as rss:
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            step()
            best = min(best, time.perf_counter() - started)
            q.grad = k.grad = v.grad = None
    return {"seconds": best, "peak_bytes": rss.peak, "density": float(layout_tensor.float().mean())}


class RssPeak:
    """The largest growth of resident memory over the block's start, sampled every millisecond
    (ru_maxrss would include the warm-up's, and a compiler's, peak)."""

    def __enter__(self):
        self.base = self.peak = 0
        self.base = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(0.001)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()


def measure(kind: str, layout: str, seq: int, args, failures: dict) -> dict | None:
    command = [sys.executable, __file__, "--worker", kind, layout, str(seq), str(args.threads), str(args.repeats)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        failures[kind] = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return None
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seqs", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-flex", action="store_true", help="skip flex_attention (its compile takes a while)")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, layout = args.worker[0], args.worker[1]
        seq, threads, repeats = (int(x) for x in args.worker[2:5])
        print(json.dumps(worker(kind, layout, seq, 8, 64, 64, threads, repeats)))
        return
    print(f"{'seq':>5} {'layout':>12} {'density':>8} {'ours ms':>8} {'sdpa ms':>8} {'flex ms':>8} {'ours MiB':>9} "
          f"{'sdpa MiB':>9} {'flex MiB':>9} {'speedup':>8} {'target':>7}")
    failures: dict[str, str] = {}
    for seq in args.seqs:
        dense = measure("sdpa", "fixed", seq, args, failures)
        for layout in LAYOUTS:
            ours = measure("ours", layout, seq, args, failures)
            flex = None if args.no_flex or "flex" in failures else measure("flex", layout, seq, args, failures)
            if ours is None or dense is None:
                print(f"{seq:>5} {layout:>12}  failed")
                continue
            flex_ms = f"{flex['seconds'] * 1e3:8.0f}" if flex else f"{'n/a':>8}"
            flex_mib = f"{flex['peak_bytes'] / 2**20:9.0f}" if flex else f"{'n/a':>9}"
            print(f"{seq:>5} {layout:>12} {ours['density']:>8.3f} {ours['seconds'] * 1e3:>8.0f} "
                  f"{dense['seconds'] * 1e3:>8.0f} {flex_ms} {ours['peak_bytes'] / 2**20:>9.0f} "
                  f"{dense['peak_bytes'] / 2**20:>9.0f} {flex_mib} {dense['seconds'] / ours['seconds']:>8.2f} "
                  f"{0.7 / ours['density']:>7.2f}")
    for kind, reason in failures.items():
        print(f"{kind}: n/a here: {reason}")


if __name__ == "__main__":
    main()
