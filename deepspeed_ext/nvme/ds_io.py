"""ds_io: how fast the async_io op reads or writes a file, with DeepSpeed's flag names.

    ds_io --read  --io_size 1G --block_size 1M --queue_depth 32 --io_parallel 2 --folder /nvme
    ds_io --write --io_size 400M --folder /nvme --loops 5 --json

Both work on <folder>/ds_io_<size>.bin, written first if missing (writes then overwrite it in
place, as fio does and as NVMe offload rewrites its swap files). The buffer is page-locked
and aligned, so every block goes to the device with O_DIRECT.
Prints the best of --loops runs in GB/s (10^9 bytes per second).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time

import torch

from deepspeed_ext.ops.async_io import aio_handle

UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    """'1G', '512M', '4096', '1.5K' -> bytes (powers of 1024, as fio and DeepSpeed read them)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)I?B?\s*", text.upper())
    if match is None or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 4096, 64K, 1M, 2G)")
    return int(float(match[1]) * UNITS[match[2]])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ds_io", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    operation = parser.add_mutually_exclusive_group(required=True)
    operation.add_argument("--read", action="store_true", help="measure reads")
    operation.add_argument("--write", action="store_true", help="measure writes")
    parser.add_argument("--folder", required=True, help="folder on the device to measure")
    parser.add_argument("--io_size", type=parse_size, default=parse_size("1G"), help="bytes per run (default 1G)")
    parser.add_argument("--block_size", type=parse_size, default=parse_size("1M"), help="bytes per request")
    parser.add_argument("--queue_depth", type=int, default=32, help="requests in flight per thread")
    parser.add_argument("--io_parallel", type=int, default=1, help="threads per call (intra_op_parallelism)")
    parser.add_argument("--single_submit", action="store_true", help="one io_submit per request")
    parser.add_argument("--overlap_events", action="store_true", help="refill the queue as requests complete")
    parser.add_argument("--loops", type=int, default=3, help="runs; the best is reported")
    parser.add_argument("--validate", action="store_true", help="compare the buffer and the file after each run")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict:
    if not os.path.isdir(args.folder):
        raise SystemExit(f"ds_io: --folder {args.folder!r} is not a directory")
    handle = aio_handle(args.block_size, args.queue_depth, args.single_submit, args.overlap_events, args.io_parallel)
    buffer = handle.new_cpu_locked_tensor(args.io_size, torch.empty(0, dtype=torch.uint8))
    path = os.path.join(args.folder, f"ds_io_{args.io_size}.bin")
    if not os.path.exists(path) or os.path.getsize(path) != args.io_size:
        buffer.random_(0, 256)
        handle.write(buffer, path)
    seconds = []
    for _ in range(args.loops):
        started = time.perf_counter()
        if args.read:
            handle.read(buffer, path, args.validate)
        else:
            handle.pwrite(buffer, path, args.validate)
        seconds.append(time.perf_counter() - started)
    handle.free_cpu_locked_tensor(buffer)
    return {"operation": "read" if args.read else "write", "bytes": args.io_size, "file": path,
            "best_s": min(seconds), "gbps": args.io_size / min(seconds) / 1e9,
            "mean_gbps": args.io_size * len(seconds) / sum(seconds) / 1e9}


def main(argv=None) -> None:
    args = parse_args(argv)
    result = measure(args)
    if args.json:
        print(json.dumps(result))
        return
    print(f"ds_io {result['operation']}: {result['bytes'] / 2**20:.0f} MiB, block {args.block_size / 2**10:.0f} KiB, "
          f"queue depth {args.queue_depth}, {args.io_parallel} thread(s): best {result['gbps']:.3f} GB/s, "
          f"mean {result['mean_gbps']:.3f} GB/s ({result['file']})")


if __name__ == "__main__":
    main()
