"""A thin layer over torch.distributed: setting up the process group (from the launcher's
environment, from an MPI launcher's, or as a single process) and nothing home-made."""

from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
from collections import Counter
from datetime import timedelta

import torch.distributed as dist

# DeepSpeed's comm API names the torch.distributed calls it wraps; these are torch's own.
from torch.distributed import (
    ReduceOp,
    all_gather,
    all_gather_into_tensor,
    all_reduce,
    all_to_all_single,
    barrier,
    broadcast,
    destroy_process_group,
    get_backend,
    get_global_rank,
    is_available,
    is_initialized,
    new_group,
    recv,
    send,
)

from .accelerator import get_accelerator

__all__ = ["ReduceOp", "all_gather", "all_gather_in_place", "all_gather_into_tensor", "all_reduce", "all_to_all",
           "all_to_all_single", "barrier", "broadcast", "comms_log", "destroy_process_group", "get_backend",
           "get_global_rank", "get_local_rank", "get_rank", "get_world_size", "init_distributed", "is_available",
           "is_initialized", "new_group", "recv", "reduce_scatter", "send"]

LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")
# (rank, world size, local rank) as Open MPI, MPICH / Intel MPI and Slurm's srun name them
MPI_ENV = (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
           ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
           ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"))


def discover_mpi_env(distributed_port: int = 29500) -> dict[str, str] | None:
    """The launcher variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) of a
    process started by mpirun, or None when MPI did not start it. Without MASTER_ADDR, rank
    0's host is shared through mpi4py."""
    for rank_var, size_var, local_var in MPI_ENV:
        if rank_var in os.environ and size_var in os.environ:
            break
    else:
        return None
    size = int(os.environ[size_var])
    master = os.environ.get("MASTER_ADDR")
    if master is None:
        master = "127.0.0.1" if size == 1 else _rank0_host_via_mpi4py(size)
    return {
        "RANK": os.environ[rank_var], "WORLD_SIZE": str(size), "LOCAL_RANK": os.environ.get(local_var, "0"),
        "MASTER_ADDR": master, "MASTER_PORT": os.environ.get("MASTER_PORT", str(distributed_port)),
    }


def _rank0_host_via_mpi4py(size: int) -> str:
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError(
            f"started by MPI with {size} ranks but MASTER_ADDR is not set, and mpi4py (which would find rank 0's "
            "host) is not installed: export MASTER_ADDR=<rank 0's address> (and MASTER_PORT), or pip install mpi4py"
        ) from None
    host = socket.gethostbyname(socket.gethostname()) if MPI.COMM_WORLD.Get_rank() == 0 else None
    return MPI.COMM_WORLD.bcast(host, root=0)


def init_distributed(dist_backend: str | None = None, auto_mpi_discovery: bool = True,
                     distributed_port: int = 29500, verbose: bool = True, timeout: timedelta = timedelta(minutes=30),
                     init_method: str | None = None, dist_init_required: bool | None = None, rank: int = -1,
                     world_size: int = -1) -> None:
    """Join (or create) the default process group, as deepspeed.init_distributed does.

    Reuses a group that already exists. Otherwise the rank and world come from, in order:
    the rank / world_size arguments, the launcher's environment (deepspeed, torchrun), an
    MPI launcher's environment, or nothing at all: a single process needs no environment.
    The backend is NCCL on CUDA and gloo on the CPU unless dist_backend says otherwise.
    """
    if dist.is_initialized():
        return
    if dist_init_required is False:
        raise RuntimeError("dist_init_required=False, but torch.distributed is not initialized: "
                           "call torch.distributed.init_process_group first, or leave dist_init_required unset")
    backend = dist_backend or get_accelerator().communication_backend_name()
    if rank < 0 and not all(name in os.environ for name in LAUNCHER_ENV):
        found = discover_mpi_env(distributed_port) if auto_mpi_discovery else None
        if found:
            os.environ.update(found)
        elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
            missing = [name for name in LAUNCHER_ENV if name not in os.environ]
            raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: "
                               "start the script with the deepspeed launcher, torchrun or mpirun")
        else:
            _init_single_process(backend, timeout, verbose)
            return
    atexit.register(_destroy_at_exit)
    _note_failures()
    if rank >= 0:
        kwargs = {"rank": rank, "world_size": world_size, "init_method": init_method or "env://"}
    else:
        kwargs = {"init_method": init_method or "env://"}
    if verbose:
        print(f"[deepspeed_ext] initializing torch.distributed ({backend}): rank "
              f"{rank if rank >= 0 else os.environ['RANK']} of {world_size if rank >= 0 else os.environ['WORLD_SIZE']}")
    dist.init_process_group(backend, timeout=timeout, **kwargs)


def _init_single_process(backend: str, timeout: timedelta, verbose: bool) -> None:
    """A group of one, on an in-memory store: no port to find, nothing to configure."""
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(name, value)
    atexit.register(_destroy_at_exit)
    if verbose:
        print(f"[deepspeed_ext] initializing torch.distributed ({backend}) as a single process")
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)


# How this process is ending, as far as Python lets a library see it: an uncaught exception
# (sys.excepthook) or sys.exit with a code; atexit handlers are not told.
_failure: list[int] = []
TEARDOWN_SECONDS = 10.0


def _note_failures() -> None:
    if getattr(sys.excepthook, "_deepspeed_ext", False):
        return
    previous_hook, previous_exit = sys.excepthook, sys.exit

    def hook(kind, value, traceback):
        _failure.append(130 if issubclass(kind, KeyboardInterrupt) else 1)
        previous_hook(kind, value, traceback)

    def exit_(code=None):
        if code is not None and code != 0:
            _failure.append(code if isinstance(code, int) else 1)
        previous_exit(code)
    hook._deepspeed_ext = True
    sys.excepthook, sys.exit = hook, exit_


def _destroy_at_exit() -> None:
    """gloo's threads abort a process that exits with its group alive ("terminate called
    without an active exception"); scripts rarely tear the group down themselves. The ranks
    first wait for each other (bounded, in case one has died), so no rank closes its
    connections while a peer is still finishing its last transfer (the same abort, about
    one run in thirty without it).

    A failing rank does none of that: its peers may be blocked in a collective it will never
    join, and tearing the group down then blocks too (the launcher stops them). It ends at
    once with its code. A finishing rank's teardown is bounded the same way."""
    if not dist.is_initialized():
        return
    if _failure:
        _end_now(_failure[0])
    if dist.get_world_size() > 1 and dist.get_backend() == "gloo":
        try:
            dist.monitored_barrier(timeout=timedelta(seconds=30))
        except RuntimeError:
            pass  # a peer is gone or stuck: nothing left to finish with it
    teardown = threading.Thread(target=dist.destroy_process_group, daemon=True)
    teardown.start()
    teardown.join(TEARDOWN_SECONDS)
    if teardown.is_alive():
        _end_now(0)


def _end_now(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


# torch 2.13 renamed the single-tensor collectives (the old names warn); older torch has only those.
_REDUCE_SCATTER = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def reduce_scatter(output, input, group=None, async_op: bool = False):
    """Sum `input` (world_size equal chunks) across ranks; rank r receives chunk r in `output`."""
    return _REDUCE_SCATTER(output, input, group=group, async_op=async_op)


class AllWork:
    """Several pending collectives waited for as one."""

    def __init__(self, works) -> None:
        self.works = works

    def wait(self) -> None:
        for work in self.works:
            work.wait()
        self.works = []


def all_gather_in_place(chunks, group=None, async_op: bool = False):
    """An all-gather where chunks[r] is rank r's tensor and already holds this rank's values
    at chunks[rank]: afterwards every chunk holds its owner's values. gloo does it as one
    broadcast per owner (several times faster than its all_gather for the same bytes;
    docs/zero.md); other backends all-gather."""
    rank = dist.get_rank(group)
    if dist.get_backend(group) == "gloo":
        works = [dist.broadcast(chunk, src=dist.get_global_rank(group, owner) if group else owner, group=group,
                                async_op=True) for owner, chunk in enumerate(chunks)]
    else:
        works = [dist.all_gather(list(chunks), chunks[rank].clone(), group=group, async_op=True)]
    work = AllWork(works)
    if async_op:
        return work
    work.wait()
    return None


def all_to_all(output, input, group=None, async_op: bool = False):
    """Equal chunks of `input` to every rank; chunk r of `output` comes from rank r."""
    return dist.all_to_all_single(output, input, group=group, async_op=async_op)


class CommsLog:
    """The bytes this rank hands to collectives, by purpose ("gradients", "parameters") and
    collective: the payload tensors' sizes, counted where ZeRO calls torch.distributed."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def record(self, purpose: str, collective: str, *tensors) -> None:
        self.counts[(purpose, collective)] += sum(t.numel() * t.element_size() for t in tensors)

    def take(self) -> dict[tuple[str, str], int]:
        """The counts since the last take, and a fresh start."""
        counts, self.counts = dict(self.counts), Counter()
        return counts

    def by_purpose(self) -> dict[str, int]:
        totals: Counter = Counter()
        for (purpose, _), count in self.counts.items():
            totals[purpose] += count
        return dict(totals)


comms_log = CommsLog()
