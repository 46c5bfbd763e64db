"""The `deepspeed` command: pick hosts and slots, then start one launch.py per node, locally
or through pdsh / mpirun / mpiexec / srun.

    deepspeed [--hostfile H] [--include ...|--exclude ...] [--num_nodes N] [--num_gpus G]
              [--master_addr A] [--master_port P] [--launcher pdsh|openmpi|mpich|slurm]
              script.py [script args]

Without a hostfile the run is local: --num_gpus (alias --num_accelerators) ranks, one per
GPU, or on a machine without GPUs, that many CPU worker processes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from . import launch, multinode
from .hostfile import filter_syntax_problems, parse_hostfile, select_resources

DEFAULT_HOSTFILE = "/job/hostfile"
DEEPSPEED_ENVIRONMENT_NAME = ".deepspeed_env"  # DeepSpeed's name: Accelerate imports it
LAUNCHERS = ("pdsh", "openmpi", "mpich", "slurm")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deepspeed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-H", "--hostfile", default=DEFAULT_HOSTFILE, help="'<host> slots=<count>' per line")
    p.add_argument("-i", "--include", default="", help="host[:slot,slot][@host...] to use")
    p.add_argument("-e", "--exclude", default="", help="host[:slot,slot][@host...] to leave out")
    p.add_argument("--num_nodes", type=int, default=-1)
    p.add_argument("--num_gpus", "--num_accelerators", dest="num_gpus", type=int, default=-1)
    p.add_argument("--master_addr", default="")
    p.add_argument("--master_port", type=int, default=29500)
    p.add_argument("--launcher", default="pdsh", choices=LAUNCHERS)
    p.add_argument("--launcher_args", default="")
    p.add_argument("--force_multi", action="store_true", help="use the multi-node launcher even for one node")
    p.add_argument("--no_ssh", action="store_true", help="start this node's ranks only (with --node_rank)")
    p.add_argument("--node_rank", type=int, default=-1)
    p.add_argument("--module", action="store_true", help="the script is a module name (python -m)")
    p.add_argument("--no_python", action="store_true", help="run the script itself, not through python")
    p.add_argument("--no_local_rank", action="store_true", help="do not pass --local_rank to the script")
    p.add_argument("--enable_each_rank_log", default=None, help="folder for one log file per rank")
    p.add_argument("--bind_cores_to_rank", action="store_true", help="pin each rank to its share of the CPUs")
    p.add_argument("--exit_grace", type=float, default=launch.EXIT_GRACE_SECONDS,
                   help="seconds the other ranks get once one rank has exited with 0; then they are stopped "
                        "(default %(default)g)")
    p.add_argument("user_script")
    p.add_argument("user_args", nargs=argparse.REMAINDER)
    return p


def parse_args(args: list[str] | None = None) -> argparse.Namespace:
    """The arguments, each checked (argparse's exit code 2 and a message naming it otherwise);
    nothing here imports torch, so `deepspeed --help` and a bad flag answer at once."""
    p = parser()
    args = p.parse_args(args)
    for problem in argument_problems(args):
        p.error(problem)
    return args


def argument_problems(args) -> list[str]:
    problems = []
    for flag, value in (("--num_gpus", args.num_gpus), ("--num_nodes", args.num_nodes)):
        if value == 0 or value < -1:
            problems.append(f"{flag} must be a positive count (or left out for all), got {value}")
    if not 1 <= args.master_port <= 65535:
        problems.append(f"--master_port must be between 1 and 65535, got {args.master_port}")
    if args.node_rank < -1:
        problems.append(f"--node_rank must be 0 or more, got {args.node_rank}")
    if args.no_ssh and args.node_rank < 0:
        problems.append("--no_ssh needs --node_rank (this node's index in the hostfile)")
    if not args.exit_grace >= 0:  # also refuses nan
        problems.append(f"--exit_grace must be 0 or more seconds, got {args.exit_grace}")
    for flag, text in (("--include", args.include), ("--exclude", args.exclude)):
        problems += [f"{flag}: {problem}" for problem in filter_syntax_problems(text)]
    try:
        shlex.split(args.launcher_args)
    except ValueError as error:
        problems.append(f"--launcher_args: {error}")
    if not (args.module or args.no_python) and not Path(args.user_script).is_file():
        problems.append(f"script {args.user_script} not found (for a module, pass --module)")
    return problems


def env_file_variables() -> dict[str, str]:
    """KEY=VAL lines of ~/.deepspeed_env then ./.deepspeed_env (the name can be changed
    with DS_ENV_FILE); the later file wins."""
    name = os.environ.get("DS_ENV_FILE", DEEPSPEED_ENVIRONMENT_NAME)
    variables = {}
    for folder in (Path.home(), Path.cwd()):
        path = folder / name
        if path.is_file():
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                key, sep, value = line.partition("=")
                if not sep or not key.strip():
                    raise ValueError(f"{path}:{number}: expected KEY=VALUE, got '{line}'")
                variables[key.strip()] = value.strip()
    return variables


def local_slots(num_gpus: int) -> int:  # imports torch: only after the arguments are checked
    if num_gpus > 0:
        return num_gpus
    try:
        import torch

        return max(torch.cuda.device_count(), 1)
    except ImportError:
        return 1


def resolve_resources(args) -> dict[str, list[int]]:
    """host -> the slot (GPU) ids that run ranks there; each node's ranks see exactly their
    slots as CUDA_VISIBLE_DEVICES (launch.py). A one-node run with none of --include /
    --exclude / --num_gpus / --num_nodes takes its GPUs from CUDA_VISIBLE_DEVICES, as DeepSpeed's."""
    hosts = parse_hostfile(args.hostfile)
    if hosts is None:
        if args.hostfile != DEFAULT_HOSTFILE:
            raise ValueError(f"hostfile {args.hostfile} not found")
        if args.num_nodes > 1:
            raise ValueError(f"--num_nodes {args.num_nodes} needs a hostfile (default {DEFAULT_HOSTFILE})")
        visible = os.environ.get(launch.VISIBLE_DEVICES, "").strip()
        if visible and not (args.include or args.exclude or args.num_gpus > 0 or args.num_nodes > 0):
            try:
                return {"localhost": [int(d) for d in visible.split(",")]}
            except ValueError:
                raise ValueError(f"{launch.VISIBLE_DEVICES}={visible!r} is not a list of GPU ids") from None
        hosts = {"localhost": local_slots(args.num_gpus)}
    return select_resources(hosts, args.include, args.exclude, args.num_nodes, args.num_gpus)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        resources = resolve_resources(args)
        extra_env = env_file_variables()
    except ValueError as error:
        parser().error(str(error))
    if not resources:
        parser().error("no hosts or slots left to run on after --include / --exclude")
    hosts = list(resources)
    if args.no_ssh and not 0 <= args.node_rank < len(hosts):
        parser().error(f"--node_rank {args.node_rank}: --no_ssh needs a node rank between 0 and {len(hosts) - 1}")
    multi = len(hosts) > 1 or args.force_multi
    args.master_addr = args.master_addr or ("127.0.0.1" if not multi else hosts[0])
    args.workdir = os.getcwd()
    os.environ.update(extra_env)
    if args.no_ssh or not multi:
        sys.exit(launch.run(launch.parser().parse_args(launch.node_arguments(args, resources, max(args.node_rank, 0)))))
    exports = multinode.exported_environment(dict(os.environ), extra_env)
    builders = {"pdsh": multinode.pdsh_command, "openmpi": multinode.mpi_command, "mpich": multinode.mpi_command,
                "slurm": multinode.slurm_command}
    command = builders[args.launcher](args, resources, exports)
    if shutil.which(command[0]) is None:
        sys.exit(f"deepspeed: --launcher {args.launcher} needs '{command[0]}' on PATH")
    sys.exit(subprocess.call(command))


if __name__ == "__main__":
    main()
