"""Step time of DeepSpeedEngine next to what it replaces, measured side by side in one run.

    python benchmarks/engine_overhead.py [--steps 30] [--width 1024]

1 rank: the engine against a plain PyTorch loop with the same model and optimizer
(DeepSpeedCPUAdam). 2 ranks (gloo, one thread each): the engine against
torch.nn.parallel.DistributedDataParallel with the same optimizer. Prints the best step
time of each and the ratio. Targets: <= 1.03x the plain loop and <= 1.05x DDP.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys

import torch
from timing import best_seconds

import deepspeed_ext as deepspeed
from deepspeed_ext.ops.cpu_adam import DeepSpeedCPUAdam

MICRO_BATCH = 64


def make_model(width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    layers = []
    for _ in range(4):
        layers += [torch.nn.Linear(width, width), torch.nn.GELU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))


def data(width: int):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(MICRO_BATCH, width, generator=generator), torch.randint(0, 10, (MICRO_BATCH,), generator=generator)


def engine_step(width: int, world: int):
    engine = deepspeed.initialize(model=make_model(width), config={
        "train_batch_size": MICRO_BATCH * world, "optimizer": {"type": "Adam", "params": {"lr": 1e-4}},
        "steps_per_print": 10**9})[0]
    x, y = data(width)

    def step():
        engine.backward(torch.nn.functional.cross_entropy(engine(x), y))
        engine.step()
    return step


def torch_loop_step(width: int, distributed: bool):
    """A hand-written training step: the plain loop, or the same under DDP."""
    model = make_model(width)
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = DeepSpeedCPUAdam(model.parameters(), lr=1e-4, adamw_mode=False)
    x, y = data(width)

    def step():
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def rank_main(width: int, steps: int) -> None:
    """One of the two ranks: time DDP and the engine, taking turns."""
    torch.set_num_threads(1)
    deepspeed.init_distributed(verbose=False)
    ddp, engine = torch_loop_step(width, distributed=True), engine_step(width, 2)
    best = {"ddp": float("inf"), "engine": float("inf")}
    for _ in range(3):
        best["ddp"] = min(best["ddp"], best_seconds(ddp, steps // 3))
        best["engine"] = min(best["engine"], best_seconds(engine, steps // 3))
    if torch.distributed.get_rank() == 0:
        print(json.dumps(best))


def two_ranks(width: int, steps: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    procs = [subprocess.Popen([sys.executable, __file__, "--rank-worker", "--width", str(width), "--steps", str(steps)],
                              env={**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
                              stdout=subprocess.PIPE, text=True) for r in range(2)]
    outputs = [p.communicate()[0] for p in procs]
    return json.loads(outputs[0].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--rank-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_worker:
        rank_main(args.width, args.steps)
        return
    torch.set_num_threads(1)
    plain, engine = torch_loop_step(args.width, distributed=False), engine_step(args.width, 1)
    best = {"plain": float("inf"), "engine": float("inf")}
    for _ in range(3):
        best["plain"] = min(best["plain"], best_seconds(plain, args.steps // 3))
        best["engine"] = min(best["engine"], best_seconds(engine, args.steps // 3))
    print(f"1 rank : plain loop {best['plain'] * 1e3:7.2f} ms, engine {best['engine'] * 1e3:7.2f} ms, "
          f"ratio {best['engine'] / best['plain']:.3f} (target <= 1.03)")
    pair = two_ranks(args.width, args.steps)
    print(f"2 ranks: DDP        {pair['ddp'] * 1e3:7.2f} ms, engine {pair['engine'] * 1e3:7.2f} ms, "
          f"ratio {pair['engine'] / pair['ddp']:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
