"""What making checkpoints survive a power loss costs: engine.save_checkpoint with the files
and folders fsynced (as shipped) against the same save with fsync turned off, one run, side
by side. Prints ms per save and the ratio.

    python benchmarks/checkpoint_fsync.py [--params 10_000_000] [--saves 5] [--folder DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

import deepspeed_ext


def mean_save_ms(engine, folder: str, saves: int) -> float:
    engine.save_checkpoint(folder, tag="warmup")
    started = time.perf_counter()
    for index in range(saves):
        engine.save_checkpoint(folder, tag=f"t{index % 2}")
    return (time.perf_counter() - started) * 1e3 / saves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--folder", default=None, help="where to save (default: a temporary folder on /tmp's disk)")
    args = parser.parse_args()
    width = int(args.params ** 0.5)
    model = torch.nn.Linear(width, width, bias=False)
    config = {"train_batch_size": 1, "optimizer": {"type": "Adam", "params": {"lr": 1e-3}}}
    engine = deepspeed_ext.initialize(model=model, config=config)[0]
    engine.backward(engine(torch.randn(1, width)).sum())
    engine.step()  # Adam's states exist: the checkpoint holds params and two moments
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        durable = mean_save_ms(engine, os.path.join(folder, "durable"), args.saves)
        real_fsync = os.fsync
        os.fsync = lambda descriptor: None
        try:
            cached = mean_save_ms(engine, os.path.join(folder, "page_cache"), args.saves)
        finally:
            os.fsync = real_fsync
        size = sum(entry.stat().st_size for entry in os.scandir(os.path.join(folder, "durable", "t0")))
    print(f"checkpoint of {width * width:,} params ({size / 2**20:.0f} MB), {args.saves} saves each")
    print(f"  fsynced (shipped):  {durable:8.1f} ms per save")
    print(f"  without fsync:      {cached:8.1f} ms per save")
    print(f"  ratio fsynced / without: {durable / cached:.2f}x (+{durable - cached:.1f} ms per save)")


if __name__ == "__main__":
    main()
