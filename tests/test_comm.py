"""init_distributed: single process with no environment, launcher variables, MPI variables,
reuse of an existing group, and the errors of a half-set environment. Each case runs in
fresh processes (the rank harness), since a process group is process-wide."""

import pytest
import torch
import torch.distributed as dist

from deepspeed_ext.comm import init_distributed
from tests.ranks import RankFailed, free_port, run_ranks


def join_and_sum() -> dict:
    init_distributed(verbose=False)
    init_distributed(verbose=False)  # a second call reuses the group
    total = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(total)
    # no destroy_process_group(): init_distributed tears the group down at exit
    return {"rank": dist.get_rank(), "world": dist.get_world_size(), "backend": dist.get_backend(), "sum": total.item()}


def test_single_process_needs_no_environment():
    assert run_ranks(join_and_sum, 1, rank_envs=[{}]) == [{"rank": 0, "world": 1, "backend": "gloo", "sum": 1.0}]


def test_two_ranks_from_launcher_variables():
    runs = run_ranks(join_and_sum, 2)
    assert [(r["rank"], r["world"], r["sum"]) for r in runs] == [(0, 2, 3.0), (1, 2, 3.0)]


@pytest.mark.parametrize("names", [("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
                                   ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID")])
def test_two_ranks_from_mpi_variables(names):
    port = str(free_port())
    runs = run_ranks(join_and_sum, 2, rank_envs=[{names[0]: str(r), names[1]: "2", names[2]: str(r),
                                                  "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port} for r in range(2)])
    assert [(r["rank"], r["sum"]) for r in runs] == [(0, 3.0), (1, 3.0)]


def test_half_set_environments_say_what_is_missing():
    with pytest.raises(RankFailed, match="MASTER_ADDR, MASTER_PORT, LOCAL_RANK not set"):
        run_ranks(join_and_sum, 1, rank_envs=[{"RANK": "0", "WORLD_SIZE": "2"}])
    with pytest.raises(RankFailed, match="MASTER_ADDR is not set|mpi4py"):
        run_ranks(join_and_sum, 1, rank_envs=[{"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}])
