"""get_accelerator() on this CPU machine: DeepSpeed's accelerator methods answer for the CPU."""

import subprocess
import sys

import pytest
import torch

from deepspeed_ext.accelerator import CpuAccelerator, get_accelerator
from deepspeed_ext.ops.op_builder import CPUAdamBuilder
from tests.ranks import child_environment


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU accelerator")
def test_cpu_accelerator():
    accelerator = get_accelerator()
    assert isinstance(accelerator, CpuAccelerator) and accelerator is get_accelerator()
    assert accelerator.device_name() == "cpu" and accelerator.device_name(0) == "cpu:0"
    assert accelerator.current_device_name() == "cpu" and accelerator.local_device() == torch.device("cpu")
    assert accelerator.communication_backend_name() == "gloo" and accelerator.is_available()
    assert accelerator.device_count() == 1 and accelerator.is_synchronized_device()
    assert torch.bfloat16 in accelerator.supported_dtypes() and accelerator.is_bf16_supported()
    assert accelerator.on_accelerator(torch.zeros(1)) and not accelerator.is_pinned(accelerator.pin_memory(torch.zeros(1)))
    accelerator.manual_seed(3)
    state = accelerator.get_rng_state()
    first = torch.rand(2)
    accelerator.set_rng_state(state)
    assert torch.equal(torch.rand(2), first)
    before = accelerator.max_memory_allocated()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    assert accelerator.memory_allocated() >= 64 * 2**20 and accelerator.max_memory_allocated() >= before
    del block
    assert accelerator.total_memory() > accelerator.available_memory() > 0
    event = accelerator.Event(enable_timing=True)
    event.record()
    with accelerator.stream(accelerator.Stream()):
        accelerator.current_stream().wait_event(event)
    accelerator.synchronize()
    assert isinstance(accelerator.create_op_builder("CPUAdamBuilder"), CPUAdamBuilder)
    assert accelerator.get_op_builder("NoSuchBuilder") is None
    env = {}
    accelerator.set_visible_devices_envs(env, [2, 3])
    assert env == {"CUDA_VISIBLE_DEVICES": "2,3"}


def test_ds_accelerator_choice_is_checked():
    code = "from deepspeed_ext.accelerator import get_accelerator; get_accelerator()"
    env = {**child_environment(), "DS_ACCELERATOR": "tpu"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "DS_ACCELERATOR='tpu'" in done.stderr
