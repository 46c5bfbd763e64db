"""What the launcher tests start on every rank, as ordinary functions:

    deepspeed --num_gpus 2 --module tests.launcher.launched NAME [ARGS]

runs NAME(*ARGS) on each rank (the launcher's --local_rank argument is dropped)."""

from __future__ import annotations

import json
import os
import sys
import time


def probe_environment(folder: str) -> None:
    keys = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "CROSS_RANK", "CROSS_SIZE", "MASTER_ADDR", "MASTER_PORT",
            "FROM_ENV_FILE", "CUDA_VISIBLE_DEVICES"]
    record = {k: os.environ.get(k) for k in keys}
    record["argv"] = sys.argv[1:]
    with open(os.path.join(folder, f"rank{os.environ['RANK']}.json"), "w") as out:
        json.dump(record, out)


def write_pid_and_sleep(folder: str) -> None:
    with open(os.path.join(folder, f"pid{os.environ['RANK']}"), "w") as out:
        out.write(str(os.getpid()))
    time.sleep(120)


def all_reduce_ranks(folder: str) -> None:
    """Writes folder/sum<rank>: the sum of rank + 1 over the ranks, and the world size (a file
    each, since ranks' printed lines can interleave)."""
    import torch
    import torch.distributed as dist

    import deepspeed_ext

    deepspeed_ext.init_distributed(verbose=False)
    total = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(total)
    with open(os.path.join(folder, f"sum{dist.get_rank()}"), "w") as out:
        out.write(f"{total.item()} {dist.get_world_size()}")


def start_children(folder: str) -> None:
    """Two processes this rank starts and leaves running: one in its process group, one that
    left it (a new session); folder/children<rank> lists their pids."""
    import subprocess

    children = [subprocess.Popen(["sleep", "300"]), subprocess.Popen(["sleep", "300"], start_new_session=True)]
    with open(os.path.join(folder, f"children{os.environ['RANK']}"), "w") as out:
        out.write(" ".join(str(child.pid) for child in children))


def fail_in_training(folder: str, how: str) -> None:
    """Rank 1 fails (`raise`, `exit` with 3, or `sigkill` itself) while rank 0 waits for it in
    an all-reduce; folder/failed_at holds when."""
    import signal

    import torch
    import torch.distributed as dist

    import deepspeed_ext

    deepspeed_ext.init_distributed(verbose=False)
    start_children(folder)
    dist.barrier()
    if dist.get_rank() == 1:
        with open(os.path.join(folder, "failed_at"), "w") as out:
            out.write(repr(time.time()))
        if how == "raise":
            raise RuntimeError("rank 1 fails on purpose")
        if how == "exit":
            sys.exit(3)
        os.kill(os.getpid(), signal.SIGKILL)
    dist.all_reduce(torch.ones(1))


def rank1_exits_early(folder: str) -> None:
    """Rank 1 ends with 0 at once; rank 0 waits for it to join the process group."""
    start_children(folder)
    if os.environ["RANK"] == "1":
        return
    import deepspeed_ext

    deepspeed_ext.init_distributed(verbose=False)


def sleep_with_children(folder: str) -> None:
    start_children(folder)
    write_pid_and_sleep(folder)


def print_rank_and_cores() -> None:
    print("hello from", os.environ["RANK"], sorted(os.sched_getaffinity(0)))


if __name__ == "__main__":
    name, *args = [arg for arg in sys.argv[1:] if not arg.startswith("--local_rank")]
    globals()[name](*args)
