"""init_distributed: single process with no environment, launcher variables, MPI variables,
reuse of an existing group, and the errors of a half-set environment. Each case runs in
fresh processes, since a process group is process-wide."""

import json
import os
import socket
import subprocess
import sys

import pytest

PROBE = """
import json, torch, torch.distributed as dist
from deepspeed_ext.comm import init_distributed
init_distributed(verbose=False)
init_distributed(verbose=False)  # a second call reuses the group
total = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(total)
print(json.dumps({"rank": dist.get_rank(), "world": dist.get_world_size(), "backend": dist.get_backend(),
                  "sum": total.item()}))
# no destroy_process_group(): init_distributed tears the group down at exit
"""
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "OMPI_COMM_WORLD_RANK",
               "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(per_rank_env):
    base = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    procs = [subprocess.Popen([sys.executable, "-c", PROBE], env={**base, **env}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for env in per_rank_env]
    outputs = [p.communicate(timeout=120) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]


def results(runs):
    for code, _, err in runs:
        assert code == 0, err[-2000:]
    return sorted((json.loads(out.splitlines()[-1]) for _, out, _ in runs), key=lambda r: r["rank"])


def test_single_process_needs_no_environment():
    (result,) = results(run_ranks([{}]))
    assert result == {"rank": 0, "world": 1, "backend": "gloo", "sum": 1.0}


def test_two_ranks_from_launcher_variables():
    port = str(free_port())
    runs = run_ranks([{"RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": port} for r in range(2)])
    assert [(r["rank"], r["world"], r["sum"]) for r in results(runs)] == [(0, 2, 3.0), (1, 2, 3.0)]


@pytest.mark.parametrize("names", [("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
                                   ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID")])
def test_two_ranks_from_mpi_variables(names):
    port = str(free_port())
    runs = run_ranks([{names[0]: str(r), names[1]: "2", names[2]: str(r), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": port} for r in range(2)])
    assert [r["sum"] for r in results(runs)] == [3.0, 3.0]


def test_half_set_environments_say_what_is_missing():
    (code, _, err), = run_ranks([{"RANK": "0", "WORLD_SIZE": "2"}])
    assert code != 0 and "MASTER_ADDR, MASTER_PORT, LOCAL_RANK not set" in err
    (code, _, err), = run_ranks([{"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}])
    assert code != 0 and ("MASTER_ADDR is not set" in err or "mpi4py" in err)
