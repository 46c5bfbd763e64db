"""deepspeed_ext.checkpointing: a checkpointed block keeps only its inputs for backward and gives
the same outputs and gradients (dropout included); configure() and the config section; the RNG
tracker."""

import pytest
import torch

import deepspeed_ext as deepspeed
from deepspeed_ext import checkpointing
from tests.memory import MEMORY_ENV, PeakAnonymousMemory
from tests.ranks import run_ranks
from tests.runtime.test_engine import ADAM


def block():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Dropout(0.5), torch.nn.Linear(32, 8))


def saved_tensor_count(fn):
    count = [0]

    def pack(tensor):
        count[0] += 1
        return tensor
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, count[0]


@pytest.fixture(autouse=True)
def unconfigured():
    checkpointing.reset()
    yield
    checkpointing.reset()


def test_checkpoint_repeats_the_forward_with_the_same_dropout():
    plain, checked = block(), block()
    x = torch.randn(4, 8, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    torch.manual_seed(1)
    out, plain_saved = saved_tensor_count(lambda: plain(x))
    out.sum().backward()
    torch.manual_seed(1)
    out2, checked_saved = saved_tensor_count(lambda: checkpointing.checkpoint(checked, x2))
    out2.sum().backward()
    assert torch.equal(out, out2) and torch.equal(x.grad, x2.grad)
    for a, b in zip(plain.parameters(), checked.parameters()):
        assert torch.equal(a.grad, b.grad)
    assert checked_saved < plain_saved  # only what the recomputation needs, not every activation


def test_configure_from_the_config_and_refusals(tmp_path):
    assert not checkpointing.is_configured()
    config = {"activation_checkpointing": {"cpu_checkpointing": True, "number_checkpoints": 4,
                                           "synchronize_checkpoint_boundary": True}}
    checkpointing.configure(None, deepspeed_config=config)
    assert checkpointing.is_configured()
    x = torch.randn(2, 8, requires_grad=True)
    checkpointing.checkpoint(block(), x).sum().backward()
    assert x.grad is not None
    with pytest.raises(deepspeed.ConfigError, match="contiguous_memory_optimization lays out partitioned"):
        checkpointing.configure(None, contiguous_checkpointing=True)
    with pytest.raises(deepspeed.ConfigError, match="activation_checkpointing.cpu_checkpointing must be true or false"):
        checkpointing.configure(None, deepspeed_config={"activation_checkpointing": {"cpu_checkpointing": "yes"}})
    with pytest.raises(ValueError, match="mpu_ must have get_model_parallel_group"):
        checkpointing.configure(object())
    # the engine configures it from its config's section
    deepspeed.initialize(model=block(), config={"train_batch_size": 2, "optimizer": ADAM,
                                                "activation_checkpointing": {"partition_activations": True,
                                                                             "profile": True}})
    assert checkpointing.is_configured()


def test_inputs_without_gradients_still_train_the_params_inside():
    plain, checked = block(), block()
    x = torch.randn(4, 8)  # torch's re-entrant checkpoint would leave the params without gradients here
    torch.manual_seed(3)
    plain(x).sum().backward()
    torch.manual_seed(3)
    checkpointing.checkpoint(checked, x).sum().backward()
    for a, b in zip(plain.parameters(), checked.parameters()):
        assert torch.equal(a.grad, b.grad)


def test_profile_logs_forward_and_recompute(monkeypatch):
    lines = []
    monkeypatch.setattr(checkpointing.logger, "info", lines.append)
    checkpointing.configure(None, profile=True)
    checkpointing.checkpoint(block(), torch.randn(2, 8, requires_grad=True)).sum().backward()
    assert [line.split(":")[0] for line in lines] == ["activation checkpoint forward",
                                                      "activation checkpoint recompute"]


class TwoRankMpu:
    """Megatron's mpu interface over every rank: the model-parallel group the inputs are split over."""

    def get_model_parallel_group(self):
        return torch.distributed.group.WORLD

    def get_model_parallel_rank(self):
        return torch.distributed.get_rank()

    def get_model_parallel_world_size(self):
        return torch.distributed.get_world_size()


def partitioned_gradients() -> dict:
    deepspeed.init_distributed(verbose=False)
    checkpointing.configure(TwoRankMpu(), partition_activations=True)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)  # the same on both ranks
    checked = block()
    torch.manual_seed(4)
    out = checkpointing.checkpoint(checked, x)
    kept = out.grad_fn.saved[0].data.numel()  # this rank's share of the saved input
    out.sum().backward()
    plain, x2 = block(), x.detach().clone().requires_grad_()
    torch.manual_seed(4)
    plain(x2).sum().backward()
    return {"kept": kept, "same": torch.equal(x.grad, x2.grad) and all(
        torch.equal(a.grad, b.grad) for a, b in zip(plain.parameters(), checked.parameters()))}


def test_partitioned_activations_give_the_same_gradients():
    for result in run_ranks(partitioned_gradients, 2):
        assert result == {"kept": 20, "same": True}  # 40 elements split over 2 ranks


def deep_mlp_peak(checkpointed: bool) -> int:
    """What one training step of a 24-layer MLP (4096 x 256 activations, 4 MiB each) adds to
    the process's memory at its peak; checkpointed, one checkpoint per 4 layers."""
    torch.manual_seed(0)
    blocks = [torch.nn.Sequential(*(m for _ in range(4) for m in (torch.nn.Linear(256, 256), torch.nn.GELU())))
              for _ in range(6)]
    x = torch.randn(4096, 256, requires_grad=True)
    with PeakAnonymousMemory() as peak:
        start = peak.bytes
        hidden = x
        for block_ in blocks:
            hidden = checkpointing.checkpoint(block_, hidden) if checkpointed else block_(hidden)
        hidden.sum().backward()
    return peak.bytes - start


def test_checkpointing_lowers_peak_memory():
    plain, checked = (run_ranks(deep_mlp_peak, 1, flag, extra_env=MEMORY_ENV)[0] for flag in (False, True))
    print(f"deep MLP step peak: {plain / 2**20:.0f} MiB plain, {checked / 2**20:.0f} MiB checkpointed")
    # plain keeps 48 activations of 4 MiB (each Linear's and GELU's input); checkpointed, 6
    # inputs plus one block's recomputation and its backward at a time
    assert checked < 0.6 * plain


def test_rng_tracker_forks_and_returns():
    checkpointing.model_parallel_cuda_manual_seed(5)
    tracker = checkpointing.get_cuda_rng_tracker()
    before = torch.get_rng_state()
    with tracker.fork():
        first = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), before)  # back on the default stream
    with tracker.fork():
        second = torch.rand(3)
    assert not torch.equal(first, second)  # the tracked state advanced
    torch.manual_seed(5 + 2718)
    assert torch.equal(torch.rand(3), first)
    with pytest.raises(ValueError, match="already tracked"):
        tracker.add("other", 5 + 2718)
