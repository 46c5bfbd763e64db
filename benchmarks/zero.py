"""ZeRO stages 0-3 next to DistributedDataParallel and torch FSDP2 (fully_shard), on 2 gloo
ranks (one thread each), measured side by side in one run.

    python benchmarks/zero.py [--layers 8] [--width 3584] [--steps 4]

The model: `layers` Linear(width, width) (8 x 3584 -> 103M params). Per configuration: the
best step time (forward, backward, step) and the per-rank peak model-state bytes (params,
gradients, master weights, optimizer states; sampled after every backward and step), in
fp32 (DDP / FSDP2 / ZeRO, same AdamW) and bf16 mixed precision (ZeRO only, against the
ZeRO paper's formulas for N = 2: stage 0 16Ψ, 1 4Ψ+12Ψ/N, 2 2Ψ+14Ψ/N, 3 16Ψ/N).
Targets: memory within 5% of the formulas; ZeRO-2 step time <= 1.1x DDP.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import torch
import torch.distributed as dist

import deepspeed_ext as deepspeed
from deepspeed_ext.ops.cpu_adam import DeepSpeedCPUAdam

MICRO_BATCH = 8
FORMULAS = {0: 16.0, 1: 4 + 12 / 2, 2: 2 + 14 / 2, 3: 16 / 2}


def make_model(layers: int, width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Tanh())
                                 for _ in range(layers)])


def tensor_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            t = t.to_local() if hasattr(t, "to_local") else t
            total += t.numel() * t.element_size()
    return total


def torch_states(model, optimizer) -> int:
    params = list(model.parameters())
    return tensor_bytes(params) + tensor_bytes(p.grad for p in params) + \
        tensor_bytes(v for s in optimizer.state.values() for v in s.values())


def run_torch(kind: str, layers: int, width: int, steps: int) -> dict:
    model = make_model(layers, width)
    if kind == "DDP":
        model = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = DeepSpeedCPUAdam(model.parameters(), lr=1e-4)
    else:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        for block in model:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)  # CPU Adam takes no DTensors
    x = torch.randn(MICRO_BATCH, width)
    peak = 0

    def step():
        nonlocal peak
        model(x).pow(2).mean().backward()
        peak = max(peak, torch_states(model, optimizer))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        peak = max(peak, torch_states(model, optimizer))
    return {"seconds": timed(step, steps), "bytes": peak}


def run_engine(stage: int, bf16: bool, layers: int, width: int, steps: int) -> dict:
    engine = deepspeed.initialize(model=make_model(layers, width), config={
        "train_micro_batch_size_per_gpu": MICRO_BATCH, "bf16": {"enabled": bf16}, "steps_per_print": 10**9,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
        "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0,
                              "stage3_max_live_parameters": 3 * width * width,
                              "stage3_max_reuse_distance": 0}})[0]
    x = torch.randn(MICRO_BATCH, width, dtype=torch.bfloat16 if bf16 else torch.float32)
    peak = 0

    def step():
        nonlocal peak
        engine.backward(engine(x).float().pow(2).mean())
        peak = max(peak, engine.memory_breakdown()["total"])
        engine.step()
        peak = max(peak, engine.memory_breakdown()["total"])
    return {"seconds": timed(step, steps), "bytes": peak}


def timed(step, steps: int) -> float:
    step()  # warm-up: states allocated, ops loaded, the ZeRO-3 trace recorded
    best = float("inf")
    for _ in range(steps):
        dist.barrier()
        started = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - started)
    return best


def rank_main(args) -> None:
    torch.set_num_threads(1)
    deepspeed.init_distributed(verbose=False)
    results = {"DDP": run_torch("DDP", args.layers, args.width, args.steps)}
    results["FSDP2"] = run_torch("FSDP2", args.layers, args.width, args.steps)
    for bf16 in (False, True):
        for stage in range(4):
            results[f"ZeRO-{stage} {'bf16' if bf16 else 'fp32'}"] = run_engine(stage, bf16, args.layers, args.width,
                                                                             args.steps)
    if dist.get_rank() == 0:
        print(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=3584)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rank-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_worker:
        rank_main(args)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    command = [sys.executable, __file__, "--rank-worker", *sys.argv[1:]]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"})
             for r in range(2)]
    outputs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        sys.exit("a rank failed")
    results = json.loads(outputs[0].strip().splitlines()[-1])
    numel = args.layers * (args.width * args.width + args.width)
    ddp = results["DDP"]["seconds"]
    print(f"{args.layers} x Linear({args.width}): {numel / 1e6:.1f}M params, 2 ranks, micro-batch {MICRO_BATCH}")
    print(f"{'configuration':<16}{'step ms':>10}{'/ DDP':>8}{'state MB':>11}{'formula MB':>12}{'/ formula':>11}")
    for name, result in results.items():
        line = f"{name:<16}{result['seconds'] * 1e3:>10.1f}{result['seconds'] / ddp:>8.3f}{result['bytes'] / 1e6:>11.1f}"
        if name.startswith("ZeRO") and name.endswith("bf16"):
            expected = FORMULAS[int(name[5])] * numel
            line += f"{expected / 1e6:>12.1f}{result['bytes'] / expected:>11.3f}"
        print(line)
    print("targets: memory / formula within 0.95-1.05 (bf16 rows); ZeRO-2 fp32 / DDP <= 1.1")


if __name__ == "__main__":
    main()
