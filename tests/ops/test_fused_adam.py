"""FusedAdam: parity with torch.optim and the bit-exact reference on the CPU, the no-op flag,
state dicts, bad input; CUDA parity where a GPU is present."""

import copy

import pytest
import torch

from deepspeed_ext.ops.fused_adam import FusedAdam
from deepspeed_ext.ops.fused_adam.fused_adam import fused_adam_ops

from .optimizer_reference import adam_reference
from .test_cpu_adam import SIZES, STEPS, check_state_dict_swap_with_adamw, make_params, set_grads, train_pair

MIXED_SIZES = [*SIZES, 3, 4096, 65_537, 5]
requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("adam_w_mode", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_matches_torch_for_many_tensors(simd_level, adam_w_mode, weight_decay):
    params, reference = make_params(MIXED_SIZES), make_params(MIXED_SIZES)
    ours = FusedAdam(params, lr=1e-2, weight_decay=weight_decay, adam_w_mode=adam_w_mode)
    torch_class = torch.optim.AdamW if adam_w_mode else torch.optim.Adam
    theirs = torch_class(reference, lr=1e-2, weight_decay=weight_decay, foreach=False)
    train_pair(ours, theirs, params, reference)
    for p, q in zip(params, reference):
        torch.testing.assert_close(p.data, q.data, rtol=1e-5, atol=1e-6)
    assert int(ours.state[params[0]]["step"]) == STEPS


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_params_are_bit_exact_with_reference(simd_level, dtype):
    params = make_params(MIXED_SIZES, dtype)
    master = [p.detach().float().clone() for p in params]
    moments = [(torch.zeros_like(m), torch.zeros_like(m)) for m in master]
    ours = FusedAdam(params, lr=1e-2, weight_decay=0.05)
    for step in range(1, STEPS + 1):
        set_grads(params, step)
        ours.step()
        for p, m, (exp_avg, exp_avg_sq) in zip(params, master, moments):
            adam_reference(m, p.grad.float(), exp_avg, exp_avg_sq, step, 1e-2, 0.9, 0.999, 1e-8, 0.05)
            m.copy_(m.to(dtype).float())
    for p, m, (_, exp_avg_sq) in zip(params, master, moments):
        assert torch.equal(p.detach(), m.to(dtype))
        assert ours.state[p]["exp_avg_sq"].dtype == torch.float32
        assert torch.equal(ours.state[p]["exp_avg_sq"], exp_avg_sq)


def test_mixed_dtypes_in_one_group():
    params = make_params([100, 200]) + make_params([300], torch.bfloat16)
    reference = make_params([100, 200]) + make_params([300], torch.bfloat16)
    ours = FusedAdam(params, lr=1e-2)
    single = [FusedAdam([p], lr=1e-2) for p in reference]
    for step in range(3):
        set_grads(params, step)
        set_grads(reference, step)
        ours.step()
        for optimizer in single:
            optimizer.step()
    for p, q in zip(params, reference):
        assert torch.equal(p.data, q.data)


def test_noop_flag_skips_the_whole_step():
    params = make_params([1000, 7])
    optimizer = FusedAdam(params, lr=1e-2)
    set_grads(params, 0)
    optimizer.step()
    before = copy.deepcopy(optimizer.state_dict()), [p.detach().clone() for p in params]
    set_grads(params, 1)
    optimizer.step(noop_flag=torch.ones(1, dtype=torch.int32))
    after = optimizer.state_dict()
    for p, old in zip(params, before[1]):
        assert torch.equal(p.detach(), old)
    for index in range(2):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(after["state"][index][key], before[0]["state"][index][key])
    optimizer.step(noop_flag=torch.zeros(1))
    assert int(optimizer.state[params[0]]["step"]) == 2


def test_state_dict_moves_between_fused_adam_and_torch_adamw():
    check_state_dict_swap_with_adamw(FusedAdam)


def test_zero_grad_follows_set_grad_none():
    (param,) = make_params([4])
    param.grad = torch.ones(4)
    FusedAdam([param], set_grad_none=False).zero_grad()
    assert torch.equal(param.grad, torch.zeros(4))
    FusedAdam([param]).zero_grad()
    assert param.grad is None


def test_op_passes_opcheck():
    ops = fused_adam_ops()
    params, grads = [torch.randn(100), torch.randn(7)], [torch.randn(100), torch.randn(7)]
    states = [[torch.zeros(100), torch.zeros(7)] for _ in range(2)]
    steps = [torch.zeros(()), torch.zeros(())]
    torch.library.opcheck(ops.fused_adam_step.default, (params, grads, states[0], states[1], steps,
                                                        torch.zeros(1, dtype=torch.int32), 1e-3, 0.9, 0.999, 1e-8,
                                                        0.0, True, True))


def test_rejects_bad_input():
    with pytest.raises(TypeError, match="param 0 of param group 0 has dtype torch.float64"):
        FusedAdam([torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))])
    with pytest.raises(ValueError, match="is on meta"):
        FusedAdam([torch.nn.Parameter(torch.zeros(4, device="meta"))])
    with pytest.raises(ValueError, match="amsgrad"):
        FusedAdam(make_params([4]), amsgrad=True)
    (param,) = make_params([4])
    optimizer = FusedAdam([param])
    param.grad = torch.zeros(4).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        optimizer.step()
    ops = fused_adam_ops()
    p, s = torch.zeros(8), torch.zeros(8)
    with pytest.raises(RuntimeError, match="noop_flag must be a one-element int32"):
        ops.fused_adam_step([p], [p], [s], [s], [torch.zeros(())], torch.zeros(1), 1e-3, 0.9, 0.999, 1e-8, 0.0,
                            True, True)
    with pytest.raises(RuntimeError, match=r"steps\[0\] must be a one-element float32"):
        ops.fused_adam_step([p], [p], [s], [s], [torch.zeros(2)], torch.zeros(1, dtype=torch.int32), 1e-3, 0.9,
                            0.999, 1e-8, 0.0, True, True)


@requires_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_matches_cpu_bit_for_bit(dtype):
    # More tensors than one launch lists (36) and one tensor longer than a launch's
    # 320 chunks of 65,536, so batching and the device-side step count are exercised.
    sizes = [*MIXED_SIZES, *([33] * 40), 320 * 65536 + 12345]
    cpu_params = make_params(sizes, dtype)
    gpu_params = [torch.nn.Parameter(p.detach().cuda()) for p in cpu_params]
    cpu, gpu = FusedAdam(cpu_params, lr=1e-2, weight_decay=0.01), FusedAdam(gpu_params, lr=1e-2, weight_decay=0.01)
    for step in range(3):
        set_grads(cpu_params, step)
        for c, g in zip(cpu_params, gpu_params):
            g.grad = c.grad.cuda()
        cpu.step()
        gpu.step()
    for c, g in zip(cpu_params, gpu_params):
        assert torch.equal(c.detach(), g.detach().cpu())
        assert torch.equal(cpu.state[c]["exp_avg_sq"], gpu.state[g]["exp_avg_sq"].cpu())
    gpu.step(noop_flag=torch.ones(1, dtype=torch.int32, device="cuda"))
    assert int(gpu.state[gpu_params[0]]["step"]) == 3
