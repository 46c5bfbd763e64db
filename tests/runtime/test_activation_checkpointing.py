"""deepspeed_ext.checkpointing: a checkpointed block keeps only its inputs for backward and gives
the same outputs and gradients (dropout included); configure() and the config section; the RNG
tracker."""

import pytest
import torch

import deepspeed_ext as deepspeed
from deepspeed_ext import checkpointing
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
    with pytest.raises(deepspeed.ConfigError, match="partition_activations: not supported"):
        checkpointing.configure(None, partition_activations=True)
    with pytest.raises(deepspeed.ConfigError, match="activation_checkpointing.cpu_checkpointing must be true or false"):
        checkpointing.configure(None, deepspeed_config={"activation_checkpointing": {"cpu_checkpointing": "yes"}})
    with pytest.raises(ValueError, match="mpu_"):
        checkpointing.configure(object())
    # the engine configures it from its config's section (and refuses what configure refuses)
    deepspeed.initialize(model=block(), config={"train_batch_size": 2, "optimizer": ADAM,
                                                "activation_checkpointing": {"cpu_checkpointing": False}})
    assert checkpointing.is_configured()
    with pytest.raises(deepspeed.ConfigError, match="profile: not supported"):
        deepspeed.initialize(model=block(), config={"train_batch_size": 2, "optimizer": ADAM,
                                                    "activation_checkpointing": {"profile": True}})


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
