"""Pipeline parallelism: deepspeed_ext's PipelineEngine (1F1B and ZB-H1) next to torch's own
torch.distributed.pipelining (Schedule1F1B and ScheduleInterleaved1F1B) and, with
--peer-python, Microsoft DeepSpeed's PipelineEngine, on the same layers, side by side in one run.

    python benchmarks/pipeline.py [--stages 2 4] [--micro-batches 4 8 16] [--rounds 3] [--peer-python PATH]

One rank per stage (gloo, one thread each), `--layers-per-stage` Linear(width, width) + GELU
blocks per stage, MSE loss, Adam. Per configuration: the median time of a training step
(all micro-batches, the optimizer step) and the measured bubble: the share of the step a
stage's thread spends waiting, 1 - (its CPU time) / (the step's wall time), averaged over
stages (a rank waiting for a transfer sleeps; compute and every library's own Python work
count as busy). Next to it the theoretical 1F1B bubble (p - 1) / (m + p - 1). The
implementations take turns, `--rounds` times, and each figure is the median over its rounds
(a shared machine's speed drifts between runs).
Targets: deepspeed_ext 1F1B's bubble within 10% of the theory, its step time <=
torch.distributed.pipelining's, ZB-H1's bubble below 1F1B's. With more stages than cores
(4 stages on a 2-core machine) ranks share cores and the figures mostly measure that.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

IMPLEMENTATIONS = ("deepspeed_ext 1F1B", "deepspeed_ext ZB-H1", "torch Schedule1F1B", "torch Interleaved1F1B")
PEER = "DeepSpeed 1F1B"
WARMUP = 2


def make_blocks(count: int, width: int):
    import torch

    torch.manual_seed(0)
    return [torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.GELU()) for _ in range(count)]


def batch(args, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    rows = args.micro_batch_size * args.micro
    return torch.randn(rows, args.width, generator=generator), torch.randn(rows, args.width, generator=generator)


def run_engine(deepspeed, impl: str, args) -> list[float]:
    import torch
    import torch.distributed as dist

    stages = dist.get_world_size()
    blocks = make_blocks(stages * args.layers_per_stage, args.width)
    module = deepspeed.pipe.PipelineModule(blocks, num_stages=stages, loss_fn=torch.nn.functional.mse_loss,
                                           partition_method="uniform")
    config = {"train_micro_batch_size_per_gpu": args.micro_batch_size, "gradient_accumulation_steps": args.micro,
              "optimizer": {"type": "Adam", "params": {"lr": 1e-4}}, "steps_per_print": 10**9}
    if impl.endswith("ZB-H1"):
        config["pipeline"] = {"schedule": "zb_h1"}
    engine = deepspeed.initialize(model=module, config=config, model_parameters=module.parameters())[0]
    times = []
    for step in range(WARMUP + args.steps):
        x, y = batch(args, step)
        micro = list(zip(x.split(args.micro_batch_size), y.split(args.micro_batch_size)))
        dist.barrier()
        started, busy = time.perf_counter(), time.thread_time()
        engine.train_batch(iter(micro))
        times.append((time.perf_counter() - started, time.thread_time() - busy))
    return times


def run_torch(impl: str, args) -> list[float]:
    import torch
    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleInterleaved1F1B

    rank, ranks = dist.get_rank(), dist.get_world_size()
    blocks = make_blocks(ranks * args.layers_per_stage, args.width)
    chunks = 2 if impl.endswith("Interleaved1F1B") else 1
    per_chunk = len(blocks) // (ranks * chunks)
    indices = [rank + c * ranks for c in range(chunks)]  # virtual stages of this rank
    modules = [torch.nn.Sequential(*blocks[i * per_chunk:(i + 1) * per_chunk]) for i in indices]
    stages = [PipelineStage(m, stage_index=i, num_stages=ranks * chunks, device=torch.device("cpu"))
              for m, i in zip(modules, indices)]
    params = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    loss_fn = torch.nn.functional.mse_loss
    schedule = Schedule1F1B(stages[0], n_microbatches=args.micro, loss_fn=loss_fn) if chunks == 1 else \
        ScheduleInterleaved1F1B(stages, n_microbatches=args.micro, loss_fn=loss_fn)
    times = []
    for step in range(WARMUP + args.steps):
        x, y = batch(args, step)
        dist.barrier()
        started, busy = time.perf_counter(), time.thread_time()
        if rank == 0:
            schedule.step(x, target=y if ranks == 1 else None)
        elif rank == ranks - 1:
            schedule.step(target=y, losses=[])
        else:
            schedule.step()
        optimizer.step()
        optimizer.zero_grad()
        times.append((time.perf_counter() - started, time.thread_time() - busy))
    return times


def worker(args) -> None:
    """One rank (started by torch.distributed.run)."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    if args.impl.startswith("torch"):
        dist.init_process_group("gloo")
        times = run_torch(args.impl, args)
    else:
        if args.impl.startswith("DeepSpeed"):
            import deepspeed
        else:
            import deepspeed_ext as deepspeed
        deepspeed.init_distributed(dist_backend="gloo")
        times = run_engine(deepspeed, args.impl, args)
    timed = times[WARMUP:]
    mine = (statistics.median(wall for wall, _ in timed), statistics.mean(1 - busy / wall for wall, busy in timed))
    results = [None] * dist.get_world_size()
    dist.all_gather_object(results, mine)
    if dist.get_rank() == 0:
        with open(args.out, "w") as handle:
            json.dump({"step": max(step for step, _ in results),
                       "bubble": statistics.mean(bubble for _, bubble in results)}, handle)
    dist.destroy_process_group()


def measure(python: str, impl: str, stages: int, micro: int, args) -> dict:
    """One configuration's figures; tried twice (the free port found may be taken by then)."""
    result = _measure_once(python, impl, stages, micro, args)
    return _measure_once(python, impl, stages, micro, args) if "error" in result else result


def _measure_once(python: str, impl: str, stages: int, micro: int, args) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [python, "-m", "torch.distributed.run", "--nproc_per_node", str(stages), "--master_port", str(port),
                   __file__, "--worker", "--impl", impl, "--micro", str(micro), "--out", out.name,
                   "--width", str(args.width), "--micro-batch-size", str(args.micro_batch_size),
                   "--layers-per-stage", str(args.layers_per_stage), "--steps", str(args.steps)]
        done = subprocess.run(command, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "Error" in line] or ["failed"]
            return {"error": errors[-1].strip()}
        with open(out.name) as handle:
            return json.load(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--micro-batches", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--peer-python", default=None, help="a Python whose `import deepspeed` is Microsoft's")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--micro-batch-size", type=int, default=32)
    parser.add_argument("--layers-per-stage", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--micro", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"pipeline training step, {args.layers_per_stage} x Linear({args.width}) + GELU per stage, micro-batch "
          f"{args.micro_batch_size} rows, gloo, 1 thread a rank, {os.cpu_count()} cores; median of {args.steps} steps, "
          f"then of {args.rounds} rounds")
    print(f"{'p':>2} {'m':>3} {'theory':>7}  " + "  ".join(f"{name:>24}" for name in
                                                       IMPLEMENTATIONS + ((PEER,) if args.peer_python else ())))
    for stages in args.stages:
        for micro in args.micro_batches:
            pythons = {impl: sys.executable for impl in IMPLEMENTATIONS}
            if args.peer_python:
                pythons[PEER] = args.peer_python
            rounds = {impl: [] for impl in pythons}
            for _ in range(args.rounds):
                for impl, python in pythons.items():
                    rounds[impl].append(measure(python, impl, stages, micro, args))
            row = {impl: _median(results) for impl, results in rounds.items()}
            cells = []
            for result in row.values():
                cells.append(f"{'failed: ' + result['error'][:16]:>24}" if "error" in result else
                             f"{result['step'] * 1e3:8.1f} ms, bubble {result['bubble']:5.1%}")
            print(f"{stages:>2} {micro:>3} {(stages - 1) / (micro + stages - 1):>7.1%}  " + "  ".join(cells))
            ours, zero_bubble, torch_1f1b = (row[name] for name in IMPLEMENTATIONS[:3])
            if all("error" not in r for r in (ours, zero_bubble, torch_1f1b)):
                print(f"{'':>14}deepspeed_ext 1F1B / torch Schedule1F1B step time: "
                      f"{ours['step'] / torch_1f1b['step']:.2f}; ZB-H1 / 1F1B bubble: "
                      f"{zero_bubble['bubble'] / max(ours['bubble'], 1e-9):.2f}"
                      + (f"; / DeepSpeed step time: {ours['step'] / row[PEER]['step']:.2f}"
                         if args.peer_python and "error" not in row[PEER] else ""))


def _median(results: list[dict]) -> dict:
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[-1]
    return {key: statistics.median(r[key] for r in ok) for key in ("step", "bubble")}


if __name__ == "__main__":
    main()
