// CUDA impl of the quantizer ops: the same checks as the CPU impl, then the kernels of
// quantizer.cu on the current stream. Compiled only where torch has CUDA.
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>

#include "quantize_math.h"
#include "quantizer_checks.h"
#include "quantizer_cuda.h"

namespace ds::quantizer {
namespace {

void check_launch(cudaError_t status, const char* op) {
  TORCH_CHECK(status == cudaSuccess, op, ": kernel launch failed: ", cudaGetErrorString(status));
}

void quantize_into_cuda(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& scales,
                        const at::Tensor& offsets, int64_t group_size, int64_t bits, bool symmetric, bool stochastic,
                        int64_t seed) {
  const int64_t groups = check_quantize_outputs(input, packed, scales, offsets, group_size, bits, stochastic);
  TORCH_CHECK(groups <= std::numeric_limits<int32_t>::max(), "quantize: at most 2^31 - 1 groups on CUDA");
  const c10::cuda::CUDAGuard guard(input.device());
  auto bad = at::full({1}, std::numeric_limits<int64_t>::max(), input.options().dtype(at::kLong));
  const QuantizeJob job{input.data_ptr(), dtype_of(input.scalar_type()), group_size, int(bits), symmetric, stochastic,
                        stochastic_key(static_cast<unsigned long long>(seed)), packed.data_ptr<uint8_t>(),
                        scales.data_ptr<float>(), offsets.data_ptr<float>()};
  check_launch(launch_quantize(job, groups, reinterpret_cast<unsigned long long*>(bad.data_ptr<int64_t>()),
                               c10::cuda::getCurrentCUDAStream()), "quantize");
  const int64_t bad_group = bad.item<int64_t>();  // a sync: inf / NaN must raise here, not later
  check_finite(bad_group == std::numeric_limits<int64_t>::max() ? -1 : bad_group, group_size);
}

void dequantize_into_cuda(const at::Tensor& packed, const at::Tensor& scales, const at::Tensor& offsets,
                          const at::Tensor& output, int64_t group_size, int64_t bits, bool symmetric) {
  check_dequantize_args(packed, scales, offsets, output, group_size, bits);
  const c10::cuda::CUDAGuard guard(packed.device());
  const DequantizeJob job{packed.data_ptr<uint8_t>(), scales.data_ptr<float>(), offsets.data_ptr<float>(), group_size,
                          int(bits), symmetric, output.data_ptr(), dtype_of(output.scalar_type())};
  check_launch(launch_dequantize(job, scales.numel(), c10::cuda::getCurrentCUDAStream()), "dequantize");
}

}  // namespace

TORCH_LIBRARY_IMPL(deepspeed_ext, CUDA, m) {
  m.impl("quantize_into", &quantize_into_cuda);
  m.impl("dequantize_into", &dequantize_into_cuda);
}

}  // namespace ds::quantizer
