"""One node's share of a run: start a process per local slot with the rank environment, and
stop them all when one fails or the launcher is told to stop.

    python -m deepspeed_ext.launcher.launch --world_info=<base64 json> --node_rank=0 \\
        --master_addr=HOST --master_port=PORT script.py [script args]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_SECONDS = 5.0
# a node's ranks see its slots and only those (get_accelerator().visible_devices_envs(), without importing torch)
VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


def encode_world_info(resources: dict[str, list[int]]) -> str:
    return base64.urlsafe_b64encode(json.dumps(resources).encode()).decode()


def decode_world_info(text: str) -> dict[str, list[int]]:
    return json.loads(base64.urlsafe_b64decode(text.encode()))


def rank_environment(resources: dict[str, list[int]], node_rank: int, master_addr: str,
                     master_port: int) -> list[dict[str, str]]:
    """The environment of each local rank of node `node_rank`."""
    hosts = list(resources)
    first_rank = sum(len(resources[h]) for h in hosts[:node_rank])
    local_slots = resources[hosts[node_rank]]
    world = sum(len(slots) for slots in resources.values())
    return [{
        "RANK": str(first_rank + local), "LOCAL_RANK": str(local), "WORLD_SIZE": str(world),
        "LOCAL_SIZE": str(len(local_slots)), "CROSS_RANK": str(node_rank), "CROSS_SIZE": str(len(hosts)),
        "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port),
        VISIBLE_DEVICES: ",".join(str(slot) for slot in local_slots),
    } for local in range(len(local_slots))]


def rank_command(args, local_rank: int) -> list[str]:
    if args.no_python:
        command = [args.training_script]
    elif args.module:
        command = [sys.executable, "-u", "-m", args.training_script]
    else:
        command = [sys.executable, "-u", args.training_script]
    if not args.no_local_rank:
        command.append(f"--local_rank={local_rank}")
    return command + args.training_script_args


def cores_of(local_rank: int, local_size: int) -> set[int]:
    """The rank's equal share of the CPUs this launcher may use."""
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // local_size)
    return set(cores[local_rank * share:(local_rank + 1) * share] or cores)


def terminate(processes: list[subprocess.Popen]) -> None:
    """SIGTERM every rank's process group, then SIGKILL what is left after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for process in processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + GRACE_SECONDS
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            time.sleep(0.05)


def run(args) -> int:
    resources = decode_world_info(args.world_info)
    environments = rank_environment(resources, args.node_rank, args.master_addr, args.master_port)
    processes, logs = [], []
    for local_rank, rank_env in enumerate(environments):
        env = {**os.environ, **rank_env}
        output = None
        if args.enable_each_rank_log:
            Path(args.enable_each_rank_log).mkdir(parents=True, exist_ok=True)
            output = open(Path(args.enable_each_rank_log) / f"rank_{rank_env['RANK']}.log", "w")  # noqa: SIM115
            logs.append(output)
        process = subprocess.Popen(rank_command(args, local_rank), env=env, stdout=output, stderr=output,
                                   start_new_session=True)
        if args.bind_cores_to_rank:  # threads the rank starts later inherit this
            os.sched_setaffinity(process.pid, cores_of(local_rank, len(environments)))
        processes.append(process)

    def stop(signum, _frame):
        terminate(processes)
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            codes = [p.poll() for p in processes]
            failed = [code for code in codes if code not in (None, 0)]
            if failed:
                terminate(processes)
                return failed[0]
            if all(code == 0 for code in codes):
                return 0
            time.sleep(0.1)
    finally:
        for log in logs:
            log.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="start one node's ranks (used by the deepspeed launcher)")
    p.add_argument("--world_info", required=True)
    p.add_argument("--node_rank", type=int, default=0)
    p.add_argument("--master_addr", default="127.0.0.1")
    p.add_argument("--master_port", type=int, default=29500)
    p.add_argument("--module", action="store_true")
    p.add_argument("--no_python", action="store_true")
    p.add_argument("--no_local_rank", action="store_true")
    p.add_argument("--enable_each_rank_log", default=None)
    p.add_argument("--bind_cores_to_rank", action="store_true")
    p.add_argument("training_script")
    p.add_argument("training_script_args", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(parser().parse_args(argv)))


if __name__ == "__main__":
    main()
