"""The per-element optimizer math and float conversions are shared with CUDA kernels: they
must compile as device code (nvcc, sm_80 and sm_90). Running them needs a GPU; the CPU
tests already exercise the same arithmetic."""

import shutil
import subprocess
from pathlib import Path

import pytest

INCLUDE = Path(__file__).resolve().parents[2] / "csrc" / "include"
KERNELS = r"""
#include <cstdint>
#include "optimizer_coeffs.h"
#include "float_convert.h"
#include "optimizer_math.h"

__global__ void update(float* p, const float* g, float* m, float* v, uint16_t* half_copy, int64_t n,
                       ds::AdamCoeffs adam, ds::AdagradCoeffs adagrad, ds::LionCoeffs lion) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  float param = p[i], exp_avg = m[i], second = v[i];
  adam_update(param, g[i], exp_avg, second, adam);
  adagrad_update(param, g[i], second, adagrad);
  lion_update(param, g[i], exp_avg, lion);
  p[i] = param; m[i] = exp_avg; v[i] = second;
  half_copy[i] = float_to_bf16(param) ^ float_to_fp16(bf16_to_float(half_copy[i]) + fp16_to_float(half_copy[i]));
}
"""


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_optimizer_math_compiles_as_cuda_device_code(tmp_path):
    source = tmp_path / "shared_math.cu"
    source.write_text(KERNELS)
    result = subprocess.run(
        ["nvcc", "-std=c++17", "--fmad=false", "-gencode=arch=compute_80,code=sm_80",
         "-gencode=arch=compute_90,code=sm_90", f"-I{INCLUDE}", "-c", str(source), "-o", str(tmp_path / "k.o")],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
