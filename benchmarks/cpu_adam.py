"""CPU Adam throughput next to its peers, measured side by side in one run.

    python benchmarks/cpu_adam.py [--sizes 1M,16M,128M] [--threads 1,2] [--repeats 7]

For each thread count and size it prints params/s of DeepSpeedCPUAdam, torch AdamW
(foreach and fused), DeepSpeed's own DeepSpeedCPUAdam when `deepspeed` is installed,
and the memory-bandwidth bound: 28 bytes move per fp32 param and step (read param, grad,
exp_avg, exp_avg_sq; write param, exp_avg, exp_avg_sq) at the bandwidth measured in the
same run. The bandwidth is the better of two streaming copies, `dst.copy_(src)` and the
in-place `a.add_(b)`: the in-place one moves memory the way an optimizer step does (reads
that are written back) and runs markedly faster here, so it is the stricter bound. Candidates take turns step by step and each keeps its best step time,
so a noisy neighbour slows every column alike. It also times a cold JIT build of the op
(in a fresh cache directory) and a warm load. Targets: at 128M params >= 0.9 of the
bound and >= 1.2x fused AdamW; cold build <= 20 s on 2 cores; warm load <= 0.5 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import torch

from deepspeed_ext.ops.cpu_adam import DeepSpeedCPUAdam

BYTES_PER_PARAM = 28


def parse_size(text: str) -> int:
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1].upper(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def copy_bandwidth(repeats: int) -> tuple[float, float]:
    """Bytes per second (every read and write counted) of out-of-cache dst.copy_(src) and
    in-place a.add_(b), each the best of repeats."""
    a, b = torch.rand(128 * 2**20), torch.rand(128 * 2**20)
    target = torch.empty_like(a)
    results = []
    for run, bytes_moved in ((lambda: target.copy_(a), 8 * a.numel()), (lambda: a.add_(b), 12 * a.numel())):
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - started)
        results.append(bytes_moved / best)
    return results[0], results[1]


def deepspeed_cpu_adam():
    if importlib.util.find_spec("deepspeed") is None:
        return None
    from deepspeed.ops.adam import DeepSpeedCPUAdam as PeerCPUAdam

    return PeerCPUAdam


def fresh_params(sizes: list[int]) -> list[torch.nn.Parameter]:
    """fp32 params of the given sizes, each with a gradient."""
    params = [torch.nn.Parameter(torch.randn(n)) for n in sizes]
    for p in params:
        p.grad = torch.randn(p.shape)
    return params


def torch_adamw_makers(sizes: list[int]) -> dict:
    """The torch.optim.AdamW peers, each a function building its optimizer on fresh params."""
    return {
        "torch foreach": lambda: torch.optim.AdamW(fresh_params(sizes), lr=1e-3, weight_decay=0, foreach=True),
        "torch fused": lambda: torch.optim.AdamW(fresh_params(sizes), lr=1e-3, weight_decay=0, fused=True),
    }


def make_optimizers(sizes: list[int]) -> dict:
    makers = {"deepspeed_ext": lambda: DeepSpeedCPUAdam(fresh_params(sizes), lr=1e-3), **torch_adamw_makers(sizes)}
    peer = deepspeed_cpu_adam()
    if peer is not None:
        makers["deepspeed"] = lambda: peer(fresh_params(sizes), lr=1e-3)
    return makers


def best_step_times(makers: dict, repeats: int) -> dict[str, float]:
    """Best step time of each candidate; they take turns so noise hits all of them alike."""
    optimizers = {}
    for name, make in makers.items():
        try:
            optimizers[name] = make()
            optimizers[name].step()  # allocates state, loads the op
        except Exception as error:  # noqa: BLE001 - a peer that will not build is reported, not fatal
            print(f"  {name}: unavailable ({type(error).__name__}: {str(error).splitlines()[0][:100]})")
    best = {name: float("inf") for name in optimizers}
    for _ in range(repeats):
        for name, optimizer in optimizers.items():
            started = time.perf_counter()
            optimizer.step()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def build_times() -> tuple[float, float]:
    """Seconds of a cold JIT build in an empty cache, then of a warm load from it (fresh processes)."""
    code = ("from deepspeed_ext.ops.op_builder import CPUAdamBuilder as B; b = B(); b.jit_load(); "
            "print(b.loaded().source, b.loaded().seconds)")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCH_EXTENSIONS_DIR": cache}
        results = []
        for expected in ("jit-build", "jit-cache"):
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            source, seconds = out.stdout.split()
            assert source == expected, out.stdout
            results.append(float(seconds))
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1M,16M,128M")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skip-build", action="store_true", help="do not time the cold JIT build")
    args = parser.parse_args()

    if not args.skip_build:
        cold, warm = build_times()
        print(f"cpu_adam JIT build: cold {cold:.1f} s (target <= 20 s), warm load {warm:.3f} s (target <= 0.5 s)")
    header = f"{'params':>8} {'thr':>3} {'candidate':>14} {'Mparams/s':>10} {'vs bound':>9} {'vs fused':>9}"
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        copy, in_place = copy_bandwidth(args.repeats)
        bound = max(copy, in_place) / BYTES_PER_PARAM
        print(f"\n{threads} thread(s): copy_ {copy / 1e9:.1f} GB/s, in-place add_ {in_place / 1e9:.1f} GB/s "
              f"-> bound {bound / 1e6:.0f} Mparams/s")
        print(header)
        for numel in (parse_size(s) for s in args.sizes.split(",")):
            best = best_step_times(make_optimizers([numel]), args.repeats)
            fused = numel / best["torch fused"]
            for name, seconds in best.items():
                rate = numel / seconds
                print(f"{numel / 2**20:>7.0f}M {threads:>3} {name:>14} {rate / 1e6:>10.0f} "
                      f"{rate / bound:>9.2f} {rate / fused:>9.2f}")


if __name__ == "__main__":
    main()
