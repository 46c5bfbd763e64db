"""The rank harness itself: results come back in rank order, a failing rank's traceback is
raised in the test, and ranks left waiting are stopped rather than waited for."""

import os
import time

import pytest
import torch

from tests.ranks import RankFailed, run_ranks


def rank_and_tensor(scale: float) -> tuple:
    rank = int(os.environ["RANK"])
    return rank, int(os.environ["WORLD_SIZE"]), torch.full((2,), scale * rank)


def rank1_raises_rank0_hangs() -> None:
    if os.environ["RANK"] == "1":
        raise ValueError("rank one broke")
    time.sleep(3600)


def test_results_in_rank_order():
    results = run_ranks(rank_and_tensor, 3, 2.0)
    assert [(rank, world) for rank, world, _ in results] == [(0, 3), (1, 3), (2, 3)]
    assert all(torch.equal(t, torch.full((2,), 2.0 * rank)) for rank, _, t in results)


def test_failing_rank_shows_its_traceback_and_stops_the_others():
    with pytest.raises(RankFailed) as failure:
        run_ranks(rank1_raises_rank0_hangs, 2, timeout=3000)
    message = str(failure.value)
    assert "2 of 2 ranks of tests.test_ranks.rank1_raises_rank0_hangs failed" in message
    assert 'in rank1_raises_rank0_hangs\n    raise ValueError("rank one broke")' in message
    assert "rank 0: stopped: another rank failed" in message


def test_only_module_level_functions():
    def local():
        return None

    with pytest.raises(ValueError, match="module-level function"):
        run_ranks(local, 1)
