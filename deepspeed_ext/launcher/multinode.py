"""Command lines that start a run on several nodes: pdsh runs launch.py once per node over
ssh; Open MPI's mpirun, MPICH's mpiexec and Slurm's srun start every rank themselves (each
rank then finds its place through init_distributed's MPI or Slurm discovery)."""

from __future__ import annotations

import shlex
import sys

from .launch import node_arguments

EXPORT_PREFIXES = ("NCCL", "PYTHON", "MV2", "UCX", "OMP_", "CUDA_VISIBLE_DEVICES", "TORCH_EXTENSIONS_DIR")


def exported_environment(environ: dict[str, str], env_file_vars: dict[str, str]) -> dict[str, str]:
    """What every node must see: NCCL* / PYTHON* (and similar) variables of this shell and
    the KEY=VAL lines of the .deepspeed_env files."""
    chosen = {k: v for k, v in environ.items() if k.startswith(EXPORT_PREFIXES)}
    chosen.update(env_file_vars)
    return chosen


def script_command(args) -> list[str]:
    if args.no_python:
        return [args.user_script, *args.user_args]
    return [sys.executable, "-u", *(["-m"] if args.module else []), args.user_script, *args.user_args]


def pdsh_command(args, resources: dict[str, list[int]], exports: dict[str, str]) -> list[str]:
    """pdsh runs launch.py on every host; %n becomes each host's index (its node rank)."""
    exporting = " ".join(f"export {k}={shlex.quote(v)};" for k, v in exports.items())
    command = [sys.executable, "-u", "-m", "deepspeed_ext.launcher.launch", *node_arguments(args, resources, "%n")]
    remote = f"{exporting} cd {shlex.quote(str(args.workdir))}; " + " ".join(
        shlex.quote(part) if part != "--node_rank=%n" else part for part in command)
    return ["pdsh", "-S", "-f", "1024", *shlex.split(args.launcher_args), "-w", ",".join(resources), remote]


def mpi_command(args, resources: dict[str, list[int]], exports: dict[str, str]) -> list[str]:
    total = sum(len(slots) for slots in resources.values())
    hosts = ",".join(f"{host}:{len(slots)}" for host, slots in resources.items())
    variables = {**exports, "MASTER_ADDR": args.master_addr, "MASTER_PORT": str(args.master_port)}
    if args.launcher == "openmpi":
        env_flags = [item for k, v in variables.items() for item in ("-x", f"{k}={v}")]
        return ["mpirun", "-n", str(total), "-host", hosts, "--mca", "btl", "^openib", *env_flags,
                *shlex.split(args.launcher_args), *script_command(args)]
    env_flags = [item for k, v in variables.items() for item in ("-env", k, v)]
    return ["mpiexec", "-n", str(total), "-hosts", ",".join(resources), "-ppn",
            str(len(next(iter(resources.values())))), *env_flags, *shlex.split(args.launcher_args),
            *script_command(args)]


def slurm_command(args, resources: dict[str, list[int]], exports: dict[str, str]) -> list[str]:
    total = sum(len(slots) for slots in resources.values())
    exporting = ",".join(["ALL", *(f"{k}={v}" for k, v in exports.items()), f"MASTER_ADDR={args.master_addr}",
                          f"MASTER_PORT={args.master_port}"])
    return ["srun", "-n", str(total), "--nodelist", ",".join(resources), f"--export={exporting}",
            *shlex.split(args.launcher_args), *script_command(args)]
