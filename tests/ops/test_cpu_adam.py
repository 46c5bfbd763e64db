"""DeepSpeedCPUAdam / Adagrad / Lion: parity with torch.optim and with bit-exact references,
on every SIMD level, dtype and tail size; state dicts; bad input."""

import copy

import pytest
import torch

from deepspeed_ext.ops.cpu_adam import DeepSpeedCPUAdagrad, DeepSpeedCPUAdam, DeepSpeedCPULion
from deepspeed_ext.ops.cpu_adam.cpu_optimizer import cpu_adam_ops
from deepspeed_ext.ops.op_builder import SIMD_LEVELS, cpu_simd_level

from .optimizer_reference import adagrad_reference, adam_reference, lion_reference

SIZES = [1, 22, 127, 1024, 1_048_577]
STEPS = 10
LOW_PRECISION = [torch.bfloat16, torch.float16]


def make_params(sizes, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(n, generator=generator).to(dtype)) for n in sizes]


def set_grads(params, step, seed=1):
    generator = torch.Generator().manual_seed(seed * 1000 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator).to(p.dtype)


def train_pair(ours, theirs, params_ours, params_theirs, steps=STEPS):
    for step in range(steps):
        set_grads(params_ours, step)
        set_grads(params_theirs, step)
        ours.step()
        theirs.step()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("adamw_mode", [True, False])
def test_adam_matches_torch(simd_level, size, weight_decay, adamw_mode):
    params, reference_params = make_params([size]), make_params([size])
    ours = DeepSpeedCPUAdam(params, lr=1e-2, weight_decay=weight_decay, adamw_mode=adamw_mode)
    torch_class = torch.optim.AdamW if adamw_mode else torch.optim.Adam
    theirs = torch_class(reference_params, lr=1e-2, weight_decay=weight_decay, foreach=False)
    train_pair(ours, theirs, params, reference_params)
    torch.testing.assert_close(params[0].data, reference_params[0].data, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.state[params[0]]["exp_avg_sq"], theirs.state[reference_params[0]]["exp_avg_sq"])


def _widened_states(state, keys):
    return [state[k].float() for k in keys] if state else None


@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION])
@pytest.mark.parametrize("fp32_states", [True, False])
@pytest.mark.parametrize("bias_correction", [True, False])
def test_adam_bit_exact_with_reference(simd_level, dtype, fp32_states, bias_correction):
    """The kernel rounds exactly where the reference does: params and states agree bit for bit."""
    params = make_params(SIZES, dtype)
    master = [p.detach().float().clone() for p in params]
    moments = [(torch.zeros_like(m), torch.zeros_like(m)) for m in master]
    state_dtype = torch.float32 if fp32_states else dtype
    hyper = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.05}
    ours = DeepSpeedCPUAdam(params, lr=hyper["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05,
                            bias_correction=bias_correction, fp32_optimizer_states=fp32_states)
    for step in range(1, STEPS + 1):
        set_grads(params, step)
        ours.step()
        for p, m, (exp_avg, exp_avg_sq) in zip(params, master, moments):
            adam_reference(m, p.grad.float(), exp_avg, exp_avg_sq, step, bias_correction=bias_correction, **hyper)
            # Low-precision params and states are rounded once per step, as the kernel does.
            m.copy_(m.to(dtype).float())
            exp_avg.copy_(exp_avg.to(state_dtype).float())
            exp_avg_sq.copy_(exp_avg_sq.to(state_dtype).float())
        for p, m, (exp_avg, exp_avg_sq) in zip(params, master, moments):
            assert torch.equal(p.detach(), m.to(dtype))
            assert ours.state[p]["exp_avg"].dtype == state_dtype
            assert torch.equal(ours.state[p]["exp_avg_sq"].float(), exp_avg_sq)


def check_against_one_state_reference(ours_class, options, reference_step, dtype):
    """Train ours and a one-state plain-torch reference side by side (the reference widened
    to fp32 and rounded to the param dtype each step, as the kernel does): bit-equal params."""
    params = make_params(SIZES, dtype)
    reference = [p.detach().float().clone() for p in params]
    states = [torch.zeros_like(r) for r in reference]
    ours = ours_class(params, **options)
    for step in range(STEPS):
        set_grads(params, step)
        ours.step()
        for p, r, state in zip(params, reference, states):
            reference_step(r, p.grad.float(), state)
            r.copy_(r.to(dtype).float())
    for p, r in zip(params, reference):
        assert torch.equal(p.detach(), r.to(dtype))
    return params


@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adagrad_matches_reference_and_torch(simd_level, dtype, weight_decay):
    params = check_against_one_state_reference(
        DeepSpeedCPUAdagrad, {"lr": 1e-2, "weight_decay": weight_decay},
        lambda r, g, s: adagrad_reference(r, g, s, lr=1e-2, eps=1e-10, weight_decay=weight_decay), dtype)
    if dtype == torch.float32:
        torch_params = make_params(SIZES)
        theirs = torch.optim.Adagrad(torch_params, lr=1e-2, weight_decay=weight_decay, eps=1e-10, foreach=False)
        for step in range(STEPS):
            set_grads(torch_params, step)
            theirs.step()
        for p, q in zip(params, torch_params):
            torch.testing.assert_close(p.data, q.data, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_lion_matches_reference(simd_level, dtype, weight_decay):
    check_against_one_state_reference(
        DeepSpeedCPULion, {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": weight_decay},
        lambda r, g, m: lion_reference(r, g, m, lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=weight_decay), dtype)


def _special_floats():
    """Random bit patterns over the whole fp32 range plus the cases rounding gets wrong:
    halfway ties, subnormal edges, overflow to inf, inf and NaN."""
    generator = torch.Generator().manual_seed(7)
    patterns = torch.randint(-(2**31), 2**31 - 1, (200_003,), generator=generator, dtype=torch.int64)
    random = patterns.to(torch.int32).view(torch.float32)
    edges = torch.tensor([0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e6, -1e6, 6.1035156e-05, 6.0e-05, 5.96e-08,
                          2.98e-08, 2.9802322e-08, 3.0e-08, 1.0 + 2**-11, 1.0 + 3 * 2**-11, 1.0 + 2**-8,
                          1.0 + 3 * 2**-8, float("inf"), float("-inf"), float("nan"), 3.4e38, 1e-40])
    return torch.cat([random, edges])


@pytest.mark.parametrize("copy_dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_param_copy_conversion_is_exact(simd_level, copy_dtype):
    """With lr=0 the step leaves params alone, so the low-precision copy written in the
    same pass must equal torch's own conversion for every float, NaN included."""
    values = _special_floats()
    param = torch.nn.Parameter(values.clone())
    param.grad = torch.zeros_like(values)
    target = torch.empty_like(values, dtype=copy_dtype)
    DeepSpeedCPUAdam([param], lr=0.0).step(fp16_param_groups=[[target]])
    expected = values.to(copy_dtype)
    nan = expected.isnan()
    assert torch.equal(target.isnan(), nan)
    assert torch.equal(target[~nan], expected[~nan])


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_params_round_trip(simd_level, dtype):
    """Widening and narrowing a bf16 / fp16 param through an lr=0 step changes no bit."""
    values = _special_floats().to(dtype)
    param = torch.nn.Parameter(values.clone())
    param.grad = torch.zeros_like(param)
    DeepSpeedCPUAdam([param], lr=0.0).step()
    nan = values.isnan()
    assert torch.equal(param.detach().isnan(), nan)
    assert torch.equal(param.detach()[~nan], values[~nan])


def test_fp32_master_updates_low_precision_copy():
    params = make_params([1000, 33])
    copies = [torch.empty_like(p, dtype=torch.bfloat16) for p in params]
    optimizer = DeepSpeedCPUAdam(params, lr=1e-2)
    set_grads(params, 0)
    optimizer.step(fp16_param_groups=[copies])
    for p, c in zip(params, copies):
        assert torch.equal(c, p.detach().to(torch.bfloat16))
    with pytest.raises(ValueError, match="fp16_param_groups has 2 groups"):
        optimizer.step(fp16_param_groups=[copies, copies])


def test_simd_level_agrees_with_python(simd_level):
    assert cpu_adam_ops().cpu_adam_simd_level() == cpu_simd_level() == simd_level


def test_invalid_simd_level_is_named(monkeypatch):
    monkeypatch.setenv("DS_SIMD", "sse9")
    with pytest.raises(ValueError, match="DS_SIMD='sse9'"):
        cpu_simd_level()
    (param,) = make_params([10])
    optimizer = DeepSpeedCPUAdam([param])
    set_grads([param], 0)
    with pytest.raises(RuntimeError, match="DS_SIMD='sse9' is not a SIMD level"):
        optimizer.step()
    assert SIMD_LEVELS == ("scalar", "avx2", "avx512")


def test_per_group_hyperparameters_and_skipped_grads():
    params, reference = make_params([64, 65, 66]), make_params([64, 65, 66])

    def groups(ps):
        return [{"params": ps[:2], "lr": 1e-2, "weight_decay": 0.1}, {"params": ps[2:], "lr": 3e-3}]

    ours = DeepSpeedCPUAdam(groups(params), lr=1e-3)
    theirs = torch.optim.AdamW(groups(reference), lr=1e-3, weight_decay=0.0, foreach=False)
    for step in range(STEPS):
        set_grads(params, step)
        set_grads(reference, step)
        params[1].grad = reference[1].grad = None  # a param without a gradient is skipped
        ours.step()
        theirs.step()
    for p, q in zip(params, reference):
        torch.testing.assert_close(p.data, q.data, rtol=1e-5, atol=1e-6)
    assert not ours.state[params[1]]
    assert torch.equal(params[1].data, make_params([64, 65, 66])[1].data)


def test_closure_is_called_with_grad_enabled():
    (param,) = make_params([8])
    optimizer = DeepSpeedCPUAdam([param], lr=0.1)

    def closure():
        optimizer.zero_grad()
        loss = (param**2).sum()
        loss.backward()
        return loss

    before = param.detach().clone()
    loss = optimizer.step(closure)
    assert loss.item() == pytest.approx((before**2).sum().item())
    assert not torch.equal(param.detach(), before)


def check_state_dict_swap_with_adamw(optimizer_class):
    """Train ours and torch's AdamW side by side, then let each continue from the other's
    state dict: they must stay together."""
    params, reference = make_params([300, 7]), make_params([300, 7])
    ours = optimizer_class(params, lr=1e-2, weight_decay=0.01)
    theirs = torch.optim.AdamW(reference, lr=1e-2, weight_decay=0.01, foreach=False)
    train_pair(ours, theirs, params, reference, steps=3)
    swapped_ours = optimizer_class(params, lr=1e-2, weight_decay=0.01)
    swapped_ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    swapped_theirs = torch.optim.AdamW(reference, lr=1e-2, weight_decay=0.01, foreach=False)
    swapped_theirs.load_state_dict(copy.deepcopy(ours.state_dict()))
    assert set(ours.state_dict()["state"][0]) == set(theirs.state_dict()["state"][0]) == {
        "step", "exp_avg", "exp_avg_sq"}
    train_pair(swapped_ours, swapped_theirs, params, reference, steps=3)
    for p, q in zip(params, reference):
        torch.testing.assert_close(p.data, q.data, rtol=1e-5, atol=1e-6)
    assert int(swapped_ours.state[params[0]]["step"]) == 6


def test_state_dict_moves_between_cpu_adam_and_torch_adamw():
    check_state_dict_swap_with_adamw(DeepSpeedCPUAdam)


def test_loads_integer_steps_as_deepspeed_saves_them():
    params, reference = make_params([50]), make_params([50])
    ours = DeepSpeedCPUAdam(params, lr=1e-2)
    theirs = DeepSpeedCPUAdam(reference, lr=1e-2)
    train_pair(ours, theirs, params, reference, steps=2)
    saved = copy.deepcopy(ours.state_dict())
    saved["state"][0]["step"] = 2
    restored = DeepSpeedCPUAdam(params, lr=1e-2)
    restored.load_state_dict(saved)
    train_pair(restored, theirs, params, reference, steps=2)
    assert torch.equal(params[0].data, reference[0].data)
    assert int(restored.state[params[0]]["step"]) == 4


def test_fp32_states_of_bf16_params_survive_a_state_dict_round_trip():
    (param,) = make_params([513], torch.bfloat16)
    optimizer = DeepSpeedCPUAdam([param], lr=1e-2)
    for step in range(3):
        set_grads([param], step)
        optimizer.step()
    saved = copy.deepcopy(optimizer.state_dict())
    restored = DeepSpeedCPUAdam([param], lr=1e-2)
    restored.load_state_dict(saved)
    for key in ("exp_avg", "exp_avg_sq"):
        assert restored.state[param][key].dtype == torch.float32
        assert torch.equal(restored.state[param][key], optimizer.state[param][key])


def test_ops_pass_opcheck():
    """Schema, fake impl and dispatch registrations are consistent (what torch.compile needs)."""
    ops = cpu_adam_ops()
    params, grads = [torch.randn(100), torch.randn(7)], [torch.randn(100), torch.randn(7)]
    states = [[torch.zeros(100), torch.zeros(7)] for _ in range(2)]
    torch.library.opcheck(ops.cpu_adam_step.default,
                          (params, grads, states[0], states[1], [], [1, 1], 1e-3, 0.9, 0.999, 1e-8, 0.0, True, True))
    torch.library.opcheck(ops.cpu_adagrad_step.default, (params, grads, states[0], [], 1e-2, 1e-10, 0.0))
    torch.library.opcheck(ops.cpu_lion_step.default, (params, grads, states[0], [], 1e-3, 0.9, 0.99, 0.0))


# ---- bad input ---------------------------------------------------------------------


def test_rejects_unsupported_params():
    with pytest.raises(ValueError, match="param 0 of param group 0 is on meta"):
        DeepSpeedCPUAdam([torch.nn.Parameter(torch.empty(4, device="meta"))])
    with pytest.raises(TypeError, match="dtype torch.float64"):
        DeepSpeedCPUAdam([torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))])
    with pytest.raises(ValueError, match="param 1 of param group 0 is not a contiguous"):
        DeepSpeedCPUAdam([torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(4, 4).t())])
    with pytest.raises(ValueError, match="amsgrad"):
        DeepSpeedCPUAdam(make_params([4]), amsgrad=True)
    with pytest.raises(ValueError, match="betas must be two values"):
        DeepSpeedCPUAdam(make_params([4]), betas=(1.5, 0.9))


def _assign(grad):
    def set_grad(param):
        param.grad = grad
    return set_grad


def _assign_unchecked(grad):
    def set_grad(param):  # .data skips the grad setter's checks, as buggy code can
        param.grad = torch.zeros_like(param)
        param.grad.data = grad
    return set_grad


@pytest.mark.parametrize("set_grad, error, message", [
    (_assign(torch.zeros(4).to_sparse()), RuntimeError, "sparse gradient"),
    (_assign_unchecked(torch.zeros(5)), ValueError, "does not match"),
    (_assign_unchecked(torch.zeros(4, dtype=torch.bfloat16)), ValueError, "does not match"),
    (_assign(torch.zeros(8)[::2]), ValueError, "non-contiguous gradient"),
])
def test_rejects_bad_gradients(set_grad, error, message):
    (param,) = make_params([4])
    optimizer = DeepSpeedCPUAdam([param])
    set_grad(param)
    with pytest.raises(error, match=message):
        optimizer.step()
    assert not optimizer.state[param]  # nothing was updated


def test_bad_tensor_in_a_later_group_leaves_no_half_taken_step():
    good, bad = make_params([16]), make_params([4])
    optimizer = DeepSpeedCPUAdam([{"params": good}, {"params": bad}])
    set_grads(good + bad, 0)
    before = good[0].detach().clone()
    with pytest.raises(ValueError, match=r"fp16_param_groups\[1\]\[0\] must be"):
        optimizer.step(fp16_param_groups=[[torch.empty(16)], [torch.empty(5)]])
    bad[0].grad = torch.zeros(8)[::2]
    with pytest.raises(ValueError, match="param 0 of param group 1 has a non-contiguous gradient"):
        optimizer.step()
    assert torch.equal(good[0].detach(), before) and not optimizer.state[good[0]]


def test_op_checks_its_inputs():
    ops = cpu_adam_ops()
    p, g, s = torch.zeros(8), torch.zeros(8), torch.zeros(8)
    with pytest.raises(RuntimeError, match="same length"):
        ops.cpu_adam_step([p], [g, g], [s], [s], [], [1], 1e-3, 0.9, 0.999, 1e-8, 0.0, True, True)
    with pytest.raises(RuntimeError, match=r"states\[0\] is not contiguous"):
        ops.cpu_adam_step([p], [g], [torch.zeros(16)[::2]], [s], [], [1], 1e-3, 0.9, 0.999, 1e-8, 0.0, True, True)
    with pytest.raises(RuntimeError, match=r"grads\[0\] has shape \[4\]"):
        ops.cpu_lion_step([p], [torch.zeros(4)], [s], [], 1e-3, 0.9, 0.99, 0.0)
    with pytest.raises(RuntimeError, match="must be float32 or BFloat16"):
        ops.cpu_adagrad_step([p.bfloat16()], [g.bfloat16()], [s.half()], [], 1e-2, 1e-10, 0.0)
    with pytest.raises(RuntimeError, match="step counts start at 1"):
        ops.cpu_adam_step([p], [g], [s], [s], [], [0], 1e-3, 0.9, 0.999, 1e-8, 0.0, True, True)
    with pytest.raises(RuntimeError, match="param_copies must be empty or one per param"):
        ops.cpu_lion_step([p], [g], [s], [p, p], 1e-3, 0.9, 0.99, 0.0)
