"""The quantizer op against a PyTorch reference of the same rule: packed bytes and scales
equal for every bit width, mode and input dtype, SIMD levels bit for bit, round-trip error
within half a step, stochastic rounding unbiased and reproducible, the edge cases, and the
errors."""

from __future__ import annotations

import pytest
import torch

from deepspeed_ext.ops.op_builder import SIMD_LEVELS, cpu_simd_level
from deepspeed_ext.ops.quantizer import dequantize, ds_quantizer, quantize, quantizer_ops


def reference(x: torch.Tensor, group_size: int, bits: int, symmetric: bool):
    """(levels as int64, scales, offsets) by the rule in csrc/include/quantize_math.h."""
    groups = x.float().view(-1, group_size)
    if symmetric:
        qmax = float(2 ** (bits - 1) - 1)
        absmax = groups.abs().amax(dim=1)
        scales = torch.where(absmax == 0, 0.0, absmax / qmax)
        inv = torch.where(absmax == 0, 0.0, torch.full_like(absmax, qmax) / absmax)  # qmax / t is qmax * (1 / t)
        offsets, qmin = torch.zeros_like(scales), -qmax
    else:
        qmax = float(2 ** bits - 1)
        lo, hi = groups.amin(dim=1), groups.amax(dim=1)
        scales = torch.where(hi == lo, 0.0, (hi - lo) / qmax)
        inv = torch.where(hi == lo, 0.0, torch.full_like(lo, qmax) / (hi - lo))
        offsets, qmin = lo, 0.0
    levels = torch.round((groups - offsets[:, None]) * inv[:, None]).clamp(qmin, qmax)
    return levels.long().flatten(), scales, offsets


def unpack(packed: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    if bits == 8:
        return packed.view(torch.int8).long() if symmetric else packed.long()
    nibbles = torch.stack([packed & 0xF, packed >> 4], dim=1).flatten().long()
    return torch.where(nibbles >= 8, nibbles - 16, nibbles) if symmetric else nibbles


CASES = [(bits, symmetric, dtype, group) for bits in (8, 4) for symmetric in (True, False)
         for dtype in (torch.float32, torch.bfloat16, torch.float16) for group in (2, 64, 1000)]


@pytest.mark.parametrize("bits,symmetric,dtype,group", CASES)
def test_matches_the_reference_and_round_trips_within_half_a_step(bits, symmetric, dtype, group):
    x = (torch.randn(group * 37, generator=torch.Generator().manual_seed(group)) * 3).to(dtype)
    packed, scales, offsets = quantize(x, group, bits, symmetric)
    levels, ref_scales, ref_offsets = reference(x, group, bits, symmetric)
    assert packed.numel() == x.numel() * bits // 8
    assert torch.equal(scales, ref_scales) and torch.equal(offsets, ref_offsets)
    assert torch.equal(unpack(packed, bits, symmetric), levels)
    restored = dequantize(packed, scales, offsets, group, bits, symmetric, torch.float32)
    step = scales.repeat_interleave(group)
    assert ((restored - x.float()).abs() <= step / 2 * (1 + 1e-5) + 1e-6).all()
    assert dequantize(packed, scales, offsets, group, bits, symmetric, dtype, x.shape).dtype == dtype


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("bits,symmetric,stochastic", [(8, True, False), (4, False, False), (8, False, True),
                                                       (4, True, True)])
def test_every_simd_level_writes_the_same_bytes(monkeypatch, bits, symmetric, stochastic, dtype):
    x = torch.randn(3 * 1000 + 0, generator=torch.Generator().manual_seed(3)).to(dtype)
    results = []
    for level in SIMD_LEVELS[: SIMD_LEVELS.index(cpu_simd_level()) + 1]:
        monkeypatch.setenv("DS_SIMD", level)
        assert quantizer_ops().quantizer_simd_level() == level
        packed, scales, offsets = quantize(x, 1000, bits, symmetric, stochastic, seed=5)
        results.append((packed, scales, offsets, dequantize(packed, scales, offsets, 1000, bits, symmetric,
                                                            dtype)))
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


def test_a_nan_scale_dequantizes_to_nan_at_every_simd_level(monkeypatch):
    packed, scales, offsets = quantize(torch.randn(64), 32)
    scales[0] = float("nan")  # a corrupted scale: the bf16 writer must not round its NaN into inf
    for level in SIMD_LEVELS[: SIMD_LEVELS.index(cpu_simd_level()) + 1]:
        monkeypatch.setenv("DS_SIMD", level)
        restored = dequantize(packed, scales, offsets, 32, dtype=torch.bfloat16)
        assert restored[:32].isnan().all() and restored[32:].isfinite().all(), level


def test_stochastic_rounding_is_unbiased_and_reproducible():
    x = torch.rand(512, generator=torch.Generator().manual_seed(0)) * 2 - 1
    draws = torch.stack([dequantize(*quantize(x, 128, 4, True, True, seed), 128, 4) for seed in range(400)])
    step = (x.view(4, 128).abs().amax(dim=1) / 7).repeat_interleave(128)
    assert ((draws - x).abs() < step * (1 + 1e-5)).all()  # rounded down or up, never further
    assert (draws.mean(dim=0) - x).abs().mean() < 0.02 * step.mean()  # nearest rounding: ~0.25 step
    nearest = dequantize(*quantize(x, 128, 4), 128, 4)
    assert (nearest - x).abs().mean() > 0.15 * step.mean()
    assert torch.equal(quantize(x, 128, 4, True, True, 7)[0], quantize(x, 128, 4, True, True, 7)[0])
    assert not torch.equal(quantize(x, 128, 4, True, True, 7)[0], quantize(x, 128, 4, True, True, 8)[0])


def test_edge_groups():
    zeros = torch.zeros(8)
    packed, scales, offsets = quantize(zeros, 4, 8)
    assert torch.equal(scales, torch.zeros(2)) and torch.equal(packed, torch.zeros(8, dtype=torch.uint8))
    assert torch.equal(dequantize(packed, scales, offsets, 4, 8), zeros)
    constant = torch.full((6,), -2.5)
    assert torch.equal(dequantize(*quantize(constant, 3, 8, symmetric=False), 3, 8, symmetric=False), constant)
    single = torch.tensor([0.3, -7.0, 1e-8])  # a group of one value is exact
    assert torch.allclose(dequantize(*quantize(single, 1, 8), 1, 8), single, rtol=1e-6, atol=0)
    # 1 / scale would overflow fp32: stored as scale 0, so the group comes back as 0 (or its min)
    tiny = torch.tensor([1e-39, -5e-40, 0.0, 2e-39, 1.0, 2.0, -1.0, 0.5])  # a tiny group, then an ordinary one
    for symmetric in (True, False):
        packed, scales, offsets = quantize(tiny, 4, 8, symmetric)
        assert scales[0] == 0
        restored = dequantize(packed, scales, offsets, 4, 8, symmetric)
        assert (restored[:4] - tiny[:4]).abs().max() <= 3e-39


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bits,asym", [(8, False), (8, True), (4, False), (4, True)])
def test_ds_quantizer_gives_the_rules_levels_times_scale(bits, asym, dtype):
    """Fake quantization: each value becomes level * scale (+ offset) of its group, with the
    reference's levels, computed in fp32 and cast back to the input's dtype."""
    x = (torch.randn(4, 60, generator=torch.Generator().manual_seed(bits + asym)) * 2).to(dtype)
    fake = ds_quantizer(x, groups=6, bit_num=bits, asym=asym)
    levels, scales, offsets = reference(x.flatten(), 40, bits, symmetric=not asym)
    expected = levels.view(6, 40).float() * scales[:, None] + offsets[:, None]
    assert fake.shape == x.shape and fake.dtype == dtype
    assert torch.equal(fake, expected.to(dtype).view(x.shape))


def test_ds_quantizer_stochastic_rounding_picks_a_neighbouring_level():
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    levels, scales, _ = reference(x.flatten(), 128, 8, symmetric=True)
    nearest = (levels.view(4, 128).float() * scales[:, None]).view(x.shape)
    step = scales.repeat_interleave(128).view(x.shape)
    fake = ds_quantizer(x, groups=4, bit_num=8, sr=True, seed=3)
    on_grid = fake / step
    assert torch.allclose(on_grid, on_grid.round(), atol=1e-3)  # a multiple of the group's step
    assert ((fake - x).abs() < step * (1 + 1e-5)).all()  # the level below or above x
    assert not torch.equal(fake, nearest)


@pytest.mark.parametrize("make,match", [
    (lambda: quantize(torch.tensor([1.0, float("nan"), 2.0, 3.0]), 2), r"inf or NaN \(group 0, elements 0..1\)"),
    (lambda: quantize(torch.tensor([1.0, 2.0, 3.0, float("inf")]), 2), r"group 1"),
    *[(lambda dtype=dtype, bad=bad: quantize(torch.tensor([1.0] * 40 + [bad] + [2.0] * 23, dtype=dtype), 32),
       r"group 1") for dtype in (torch.bfloat16, torch.float16) for bad in (float("nan"), float("-inf"))],
    (lambda: quantize(torch.randn(10), 4), "not a multiple of group_size 4"),
    (lambda: quantize(torch.randn(9), 3, bits=4), "group_size must be even"),
    (lambda: quantize(torch.randn(8), 4, bits=2), "bits must be 8 or 4"),
    (lambda: quantize(torch.arange(8), 4), "supported are float32, bfloat16 and float16"),
    (lambda: dequantize(torch.zeros(8, dtype=torch.uint8), torch.ones(3), torch.zeros(3), 4),
     "packed has 8 bytes; 3 groups of 4 8-bit values need 12"),
    (lambda: ds_quantizer(torch.randn(10), groups=3), "not divisible into 3 groups"),
])
def test_bad_input_is_named(make, match):
    with pytest.raises((RuntimeError, ValueError), match=match):
        make()


def test_ops_pass_opcheck_and_write_given_buffers():
    ops = quantizer_ops()
    x = torch.randn(64)
    out = (torch.empty(32, dtype=torch.uint8), torch.empty(4), torch.empty(4))
    torch.library.opcheck(ops.quantize_into.default, (x, *out, 16, 4, False, True, 3))
    assert quantize(x, 16, 4, False, True, 3, out=out)[0] is out[0]
    restored = torch.empty(64, dtype=torch.bfloat16)
    torch.library.opcheck(ops.dequantize_into.default, (*out, restored, 16, 4, False))
    assert dequantize(*out, 16, 4, False, out=restored) is restored
    with pytest.raises(RuntimeError, match="scales must be a contiguous Float tensor of 4 elements"):
        quantize(x, 16, 8, out=(torch.empty(64, dtype=torch.uint8), torch.empty(3), torch.empty(4)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_writes_the_cpu_bytes():
    x = torch.randn(64 * 100, dtype=torch.bfloat16)
    for bits, symmetric, stochastic in ((8, True, False), (4, False, True)):
        on_cpu = quantize(x, 64, bits, symmetric, stochastic, 3)
        on_gpu = quantize(x.cuda(), 64, bits, symmetric, stochastic, 3)
        assert all(torch.equal(a, b.cpu()) for a, b in zip(on_cpu, on_gpu))
        assert torch.equal(dequantize(*on_cpu, 64, bits, symmetric, torch.float16),
                           dequantize(*on_gpu, 64, bits, symmetric, torch.float16).cpu())


def test_bad_tensors_and_sizes_are_refused_before_any_allocation():
    values = torch.randn(256)
    packed, scales, offsets = quantize(values, 128, 8)
    with pytest.raises(ValueError, match="input has layout torch.sparse_coo"):
        quantize(values.to_sparse(), 128, 8)
    with pytest.raises(ValueError, match="2 groups of 1000000000000 8-bit values need"):
        dequantize(packed, scales, offsets, 10**12, 8)  # would have sized a 4 TB output
    with pytest.raises(ValueError, match="bits 4 or 8"):
        dequantize(packed, scales, offsets, 128, 3)
    with pytest.raises(RuntimeError, match="every tensor must be on one device, got cpu, meta"):
        dequantize(packed, scales.to("meta"), offsets, 128, 8)
