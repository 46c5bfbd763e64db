"""The rank harness: runs an ordinary test function on N fresh processes (gloo ranks on
loopback) and returns what each rank's call returned.

    def train_on_rank(stage):          # module level, in a test module
        ...
        return params

    results = run_ranks(train_on_rank, 2, 3)   # one result per rank, in rank order

Each rank imports the function's module and calls it (tests/rank_worker.py), so a failure is
raised here with the failing rank's own traceback into the function. When one rank fails, the
others get a short grace period and are then stopped, so a rank left waiting in a collective
does not hold the test until the timeout.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "OMPI_COMM_WORLD_RANK",
               "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID")
FAILED_RANK_GRACE_S = 10.0


class RankFailed(AssertionError):
    """One or more ranks raised, crashed or timed out; the message holds each one's traceback."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_environment() -> dict:
    """This process's environment without any launcher variable, so a child starts as a fresh job."""
    return {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}


def launch_environments(world_size: int) -> list[dict]:
    """The variables the `deepspeed` launcher gives each rank of a one-node job."""
    port = str(free_port())
    return [{"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(world_size), "LOCAL_SIZE": str(world_size),
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port} for r in range(world_size)]


def run_ranks(fn: Callable, world_size: int, *args, timeout: float = 240, extra_env: dict | None = None,
              rank_envs: Sequence[dict] | None = None, **kwargs) -> list:
    """Calls fn(*args, **kwargs) on world_size new processes; returns their results in rank order.

    fn must be a module-level function; args, kwargs and results must pickle. Each rank gets
    the launcher's variables (RANK, WORLD_SIZE, MASTER_ADDR, ...) plus extra_env, or, when
    rank_envs is given, exactly rank_envs[r] (one per process) on top of a clean environment.
    """
    envs = list(rank_envs) if rank_envs is not None else launch_environments(world_size)
    if len(envs) != world_size:
        raise ValueError(f"rank_envs has {len(envs)} entries for {world_size} ranks")
    base = child_environment()
    with tempfile.TemporaryDirectory(prefix="ranks_") as folder:
        job = _write_job(Path(folder), fn, args, kwargs)
        results = [Path(folder) / f"rank{r}.pkl" for r in range(world_size)]
        logs = [open(Path(folder) / f"rank{r}.log", "w+") for r in range(world_size)]  # noqa: SIM115
        procs = [subprocess.Popen(_worker_command(job, results[r]), cwd=ROOT, stdout=logs[r], stderr=subprocess.STDOUT,
                                  env={**base, **(extra_env or {}), **envs[r]})
                 for r in range(world_size)]
        try:
            stopped = _wait(procs, timeout)
        finally:
            for p in procs:
                p.kill()
                p.wait()
        outcomes = []
        for rank, (p, result, log) in enumerate(zip(procs, results, logs)):
            log.seek(0)
            output = log.read()
            log.close()
            if result.exists():
                outcomes.append((rank, *pickle.loads(result.read_bytes()), output))
            else:
                why = stopped.get(rank, f"exited with code {p.returncode} without a result")
                outcomes.append((rank, "error", why, output))
    failures = [f"rank {rank}: {detail}\n--- its output (last 3000 characters) ---\n{output[-3000:]}"
                for rank, status, detail, output in outcomes if status != "ok"]
    if failures:
        raise RankFailed(f"{len(failures)} of {world_size} ranks of {fn.__module__}.{fn.__name__} failed\n\n"
                         + "\n\n".join(failures))
    return [value for _, _, value, _ in outcomes]


def spawn(fn: Callable, folder: Path, *args, **popen_kwargs) -> subprocess.Popen:
    """Starts fn(*args) in one new process and returns it at once, for a test that stops it
    part way (its result is dropped); folder holds the job file."""
    job = _write_job(folder, fn, args, {})
    return subprocess.Popen(_worker_command(job, Path(os.devnull)), cwd=ROOT, env=child_environment(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen_kwargs)


def child_environment() -> dict:
    env = clean_environment()
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # ranks share the cores
    return env


def _write_job(folder: Path, fn: Callable, args: tuple, kwargs: dict) -> Path:
    if "." in fn.__qualname__:
        raise ValueError(f"the rank harness needs a module-level function, got {fn.__qualname__}")
    job = folder / f"job_{fn.__name__}.pkl"
    job.write_bytes(pickle.dumps((fn.__module__, fn.__name__, args, kwargs)))
    return job


def _worker_command(job: Path, result: Path) -> list[str]:
    return [sys.executable, "-m", "tests.rank_worker", str(job), str(result)]


def _wait(procs: list, timeout: float) -> dict[int, str]:
    """Waits for every process, or until one failed and the grace period passed, or the
    timeout; returns the ranks still running then, each with why it is being stopped."""
    deadline, why = time.monotonic() + timeout, f"still running after the {timeout} s timeout"
    in_grace = False
    while time.monotonic() < deadline:
        codes = [p.poll() for p in procs]
        if all(code is not None for code in codes):
            return {}
        if not in_grace and any(code not in (None, 0) for code in codes):
            in_grace, deadline, why = True, time.monotonic() + FAILED_RANK_GRACE_S, "stopped: another rank failed"
        time.sleep(0.02)
    return {rank: why for rank, p in enumerate(procs) if p.poll() is None}
