"""FusedAdam on the CPU next to torch.optim.AdamW (fused and foreach), side by side in one run.

    python benchmarks/fused_adam.py [--threads 1,2] [--repeats 5]

Two workloads: the 148 tensors of a GPT-2 small (124M params), and 200 tensors of 1,000
elements, where per-tensor overhead dominates. Prints params/s and the ratio to torch's
fused AdamW. (The CUDA kernel cannot run on a machine without a GPU; tests/ops/
test_fused_adam.py checks it against the CPU bit for bit where one exists.)
"""

from __future__ import annotations

import argparse

import torch
from cpu_adam import best_step_times, fresh_params, torch_adamw_makers

from deepspeed_ext.ops.fused_adam import FusedAdam


def gpt2_small_sizes(layers: int = 12, width: int = 768, vocab: int = 50257, context: int = 1024) -> list[int]:
    block = [width, width, 3 * width * width, 3 * width, width * width, width,  # ln_1, attention
             width, width, 4 * width * width, 4 * width, 4 * width * width, width]  # ln_2, mlp
    return [vocab * width, context * width, *block * layers, width, width]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    workloads = {"gpt2-small (148 tensors)": gpt2_small_sizes(), "200 x 1,000": [1000] * 200}
    print(f"{'workload':>26} {'thr':>3} {'candidate':>14} {'Mparams/s':>10} {'vs fused':>9}")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for workload, sizes in workloads.items():
            makers = {"FusedAdam": lambda sizes=sizes: FusedAdam(fresh_params(sizes), lr=1e-3),
                      **torch_adamw_makers(sizes)}
            best = best_step_times(makers, args.repeats)
            total = sum(sizes)
            for name, seconds in best.items():
                print(f"{workload:>26} {threads:>3} {name:>14} {total / seconds / 1e6:>10.0f} "
                      f"{best['torch fused'] / seconds:>9.2f}")


if __name__ == "__main__":
    main()
