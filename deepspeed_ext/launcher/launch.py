"""One node's share of a run: start a process per local slot with the rank environment, and
stop the whole job (job.py: the ranks and everything they started) when one fails, when
one finishes while the others hang on, or when the launcher is told to stop or dies.

    python -m deepspeed_ext.launcher.launch --world_info=<base64 json> --node_rank=0 \\
        --master_addr=HOST --master_port=PORT script.py [script args]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import job

# A rank that finished while others still run: how long they get before the job is stopped
# (finishing ranks wait up to 30 s for each other at exit, comm.py; a last save may take longer).
EXIT_GRACE_SECONDS = 120.0
EARLY_EXIT_CODE = 1
# a node's ranks see its slots and only those (get_accelerator().visible_devices_envs(), without importing torch)
VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


def encode_world_info(resources: dict[str, list[int]]) -> str:
    return base64.urlsafe_b64encode(json.dumps(resources).encode()).decode()


def decode_world_info(text: str) -> dict[str, list[int]]:
    return json.loads(base64.urlsafe_b64decode(text.encode()))


def node_arguments(args, resources: dict[str, list[int]], node_rank: int | str) -> list[str]:
    """This module's command-line arguments for one node of a run the runner's `args` describe
    (node_rank may be pdsh's %n placeholder)."""
    flags = [f"--world_info={encode_world_info(resources)}", f"--node_rank={node_rank}",
             f"--master_addr={args.master_addr}", f"--master_port={args.master_port}",
             f"--exit_grace={args.exit_grace}"]
    flags += [f"--{flag}" for flag in ("module", "no_python", "no_local_rank", "bind_cores_to_rank")
              if getattr(args, flag)]
    if args.enable_each_rank_log:
        flags.append(f"--enable_each_rank_log={args.enable_each_rank_log}")
    return [*flags, args.user_script, *args.user_args]


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


def _exit_code(returncode: int) -> int:
    """A shell's convention: 128 + N for a process killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def run(args) -> int:
    """Start this node's ranks and wait. The first rank to fail (a non-zero exit or a signal)
    stops the whole job and its code is returned; a rank that ends with 0 while others keep
    running gives them args.exit_grace seconds, then they are stopped too."""
    resources = decode_world_info(args.world_info)
    environments = rank_environment(resources, args.node_rank, args.master_addr, args.master_port)
    job_id = job.new_job_id()
    guard = job.Guard(job_id)  # forked before any rank exists, and before this process has threads (_wait)
    processes, logs = [], []

    def reap() -> None:
        for process in processes:
            process.poll()

    def stop_everything() -> None:
        job.stop_job(job_id, [p.pid for p in processes], reap)

    def on_signal(signum, _frame):
        stop_everything()
        guard.release()
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for local_rank, rank_env in enumerate(environments):
            env = {**os.environ, **rank_env, job.JOB_VARIABLE: job_id}
            output = None
            if args.enable_each_rank_log:
                Path(args.enable_each_rank_log).mkdir(parents=True, exist_ok=True)
                output = open(Path(args.enable_each_rank_log) / f"rank_{rank_env['RANK']}.log", "w")  # noqa: SIM115
                logs.append(output)
            process = subprocess.Popen(rank_command(args, local_rank), env=env, stdout=output, stderr=output,
                                       start_new_session=True)
            guard.watch(process.pid)
            if args.bind_cores_to_rank:  # threads the rank starts later inherit this
                os.sched_setaffinity(process.pid, cores_of(local_rank, len(environments)))
            processes.append(process)
        code = _wait(processes, environments, args.exit_grace)
        stop_everything()  # what the ranks started and left behind goes too
        return code
    finally:
        guard.release()
        for log in logs:
            log.close()


def _wait(processes: list[subprocess.Popen], environments: list[dict], exit_grace: float) -> int:
    """The job's exit code. A thread waits on each rank so that exits are seen in the order
    they happen: a rank's failure often makes its peers fail a moment later (a closed
    connection), and the first failure is the one to report."""
    exits: queue.Queue = queue.Queue()
    for index, process in enumerate(processes):
        threading.Thread(target=lambda i=index, p=process: exits.put((i, p.wait())), daemon=True).start()
    running, first_done = set(range(len(processes))), None
    while running:
        timeout = None if first_done is None else max(0.0, first_done + exit_grace - time.monotonic())
        try:
            index, code = exits.get(timeout=timeout)
        except queue.Empty:
            ranks = [environments[i]["RANK"] for i in sorted(running)]
            done = [env["RANK"] for i, env in enumerate(environments) if i not in running]
            _report(f"ranks {', '.join(done)} exited with 0 but ranks {', '.join(ranks)} were still running "
                    f"{exit_grace:g} s later (--exit_grace); stopping them")
            return EARLY_EXIT_CODE
        running.discard(index)
        if code != 0:
            _report(f"rank {environments[index]['RANK']} (pid {processes[index].pid}) {_describe(code)}; "
                    "stopping the job")
            return _exit_code(code)
        if first_done is None:
            first_done = time.monotonic()
    return 0


def _describe(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (exit code {_exit_code(code)})"
    return f"exited with code {code}"


def _report(message: str) -> None:
    print(f"[deepspeed_ext launcher] {message}", file=sys.stderr, flush=True)


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
    p.add_argument("--exit_grace", type=float, default=EXIT_GRACE_SECONDS)
    p.add_argument("training_script")
    p.add_argument("training_script_args", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(parser().parse_args(argv)))


if __name__ == "__main__":
    main()
