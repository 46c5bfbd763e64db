"""A param used on one rank and not on another in the same step: its gradient is averaged
with zeros from the ranks that did not use it (DistributedDataParallel's
find_unused_parameters), at every ZeRO stage, instead of pairing mismatched buckets; with
zero_optimization.ignore_unused_parameters false, an unused param is an error on every rank."""

import pytest
import torch

import deepspeed_ext as deepspeed
from tests.ranks import RankFailed, run_ranks

LR = 0.1


class TwoBranches(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = torch.nn.Linear(4, 8)
        self.left = torch.nn.Linear(8, 1)
        self.right = torch.nn.Linear(8, 1)

    def forward(self, x, use_right: bool):
        # `right` runs on every rank (ZeRO-3 gathers a module's params collectively as it runs, so
        # ranks must run the same modules, as in DeepSpeed); its output reaches the loss or not.
        hidden = torch.tanh(self.trunk(x))
        right = self.right(hidden)
        return self.left(hidden) + right if use_right else self.left(hidden)


def batch(rank: int):
    generator = torch.Generator().manual_seed(rank)
    return torch.randn(2, 4, generator=generator), torch.randn(2, 1, generator=generator)


def step_with_branches(stage: int, right_on: list[bool], ignore: bool):
    config = {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "SGD", "params": {"lr": LR}},
              "zero_optimization": {"stage": stage, "ignore_unused_parameters": ignore,
                                    "stage3_param_persistence_threshold": 0}}
    engine = deepspeed.initialize(model=TwoBranches(), config=config)[0]
    rank = engine.global_rank
    x, y = batch(rank)
    for _ in range(2):  # two steps: the second shows the first left the reducer in a clean state
        engine.backward(torch.nn.functional.mse_loss(engine(x, right_on[rank]), y))
        engine.step()
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        return {name: p.detach().clone() for name, p in engine.module.named_parameters()}


def two_steps_expected(right_on):
    """The same two SGD steps in plain torch."""
    model = TwoBranches()
    for _ in range(2):
        grads = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
        for rank in range(len(right_on)):
            model.zero_grad()
            x, y = batch(rank)
            torch.nn.functional.mse_loss(model(x, right_on[rank]), y).backward()
            for name, p in model.named_parameters():
                if p.grad is not None:
                    grads[name] += p.grad / len(right_on)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p -= LR * grads[name]
    return {name: p.detach() for name, p in model.named_parameters()}


@pytest.mark.parametrize(("stage", "right_on"), [(0, [True, False]), (1, [True, False]), (2, [True, False]),
                                               (0, [False, False]), (2, [False, False]), (3, [False, False])])
def test_a_param_some_ranks_skip_is_averaged_with_zeros(stage, right_on):
    expected = two_steps_expected(right_on)
    for result in run_ranks(step_with_branches, 2, stage, right_on, True):
        for name, value in expected.items():
            torch.testing.assert_close(result[name], value, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("stage", [0, 2])
def test_unused_params_are_an_error_when_not_ignored(stage):
    with pytest.raises(RankFailed) as failed:
        run_ranks(step_with_branches, 2, stage, [True, False], False)
    message = str(failed.value)
    assert message.count("params without a gradient in this step: right.weight (used on 1 of 2 ranks)") == 2
    assert "ignore_unused_parameters is false" in message


def test_partly_used_params_at_stage3_are_an_error_on_every_rank():
    with pytest.raises(RankFailed) as failed:
        run_ranks(step_with_branches, 2, 3, [True, False], True)
    assert str(failed.value).count("params used in the loss on some ranks only: right.weight (used on 1 of 2") == 2
