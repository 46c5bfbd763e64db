"""ds_io next to fio on the same file: sequential O_DIRECT reads and writes through libaio
with the same size, block size and queue depth, one thread each, run alternately.

    python benchmarks/async_io.py [--folder DIR] [--io_size 1G] [--queue_depths 8 32] [--rounds 3]

Prints the best GB/s of each over the rounds (a virtual disk's speed wanders between runs;
alternating and taking the best keeps the two comparable) and ds_io / fio. Target: >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile


def ds_io(operation: str, folder: str, size: str, block: str, depth: int) -> float:
    command = [sys.executable, "-m", "deepspeed_ext.nvme.ds_io", f"--{operation}", "--folder", folder, "--io_size",
               size, "--block_size", block, "--queue_depth", str(depth), "--overlap_events", "--loops", "1", "--json"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.splitlines()[-1])["gbps"]


def fio(operation: str, path: str, size: str, block: str, depth: int) -> float:
    command = ["fio", "--name=peer", f"--filename={path}", f"--rw={operation}", f"--bs={block}", f"--iodepth={depth}",
               f"--size={size}", "--ioengine=libaio", "--direct=1", "--numjobs=1", "--output-format=json"]
    report = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    return report["jobs"][0][operation]["bw_bytes"] / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", default=None, help="folder on the device (default: a temporary one here)")
    parser.add_argument("--io_size", default="1G")
    parser.add_argument("--block_size", default="1M")
    parser.add_argument("--queue_depths", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("fio") is None:
        raise SystemExit("fio is not installed: apt-get install fio (scripts/install.sh does)")
    from deepspeed_ext.nvme.ds_io import parse_size

    folder = args.folder or tempfile.mkdtemp(prefix="async_io_bench_", dir=os.getcwd())
    path = os.path.join(folder, f"ds_io_{parse_size(args.io_size)}.bin")  # ds_io's file, so both use the same
    print(f"{'op':>6} {'QD':>3} {'ds_io GB/s':>11} {'fio GB/s':>9} {'ds_io/fio':>10}")
    try:
        for operation in ("read", "write"):
            for depth in args.queue_depths:
                ours, peer = [], []
                for _ in range(args.rounds):
                    ours.append(ds_io(operation, folder, args.io_size, args.block_size, depth))
                    peer.append(fio(operation, path, args.io_size, args.block_size, depth))
                print(f"{operation:>6} {depth:>3} {max(ours):>11.3f} {max(peer):>9.3f} {max(ours) / max(peer):>10.3f}")
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
