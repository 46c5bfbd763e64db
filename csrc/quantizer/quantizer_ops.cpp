// The quantizer op library: schemas, input checks, and the CPU impls (groups split across
// torch's intra-op threads, each range run at the SIMD level DS_SIMD and the CPU allow).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <atomic>
#include <string>

#include "quantize_math.h"
#include "quantizer.h"
#include "quantizer_checks.h"
#include "simd.h"
#include "simd_level_check.h"

namespace ds::quantizer {
namespace {

constexpr int64_t kGrainElements = 1 << 16;  // per thread task: below this, threading costs more than it saves

void quantize_into_cpu(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& scales,
                       const at::Tensor& offsets, int64_t group_size, int64_t bits, bool symmetric, bool stochastic,
                       int64_t seed) {
  const int64_t groups = check_quantize_outputs(input, packed, scales, offsets, group_size, bits, stochastic);
  const QuantizeJob job{input.data_ptr(), dtype_of(input.scalar_type()), group_size, int(bits), symmetric, stochastic,
                        stochastic_key(static_cast<unsigned long long>(seed)), packed.data_ptr<uint8_t>(),
                        scales.data_ptr<float>(), offsets.data_ptr<float>()};
  const SimdLevel level = checked_simd_level();
  std::atomic<int64_t> bad{-1};
  at::parallel_for(0, groups, std::max<int64_t>(1, kGrainElements / group_size), [&](int64_t first, int64_t last) {
    int64_t found;
#if DS_SIMD_X86
    if (level == SimdLevel::avx512) found = avx512::quantize_groups(job, first, last);
    else if (level == SimdLevel::avx2) found = avx2::quantize_groups(job, first, last);
    else
#endif
      found = scalar::quantize_groups(job, first, last);
    if (found >= 0) bad.store(found);
  });
  check_finite(bad.load(), group_size);
}

void dequantize_into_cpu(const at::Tensor& packed, const at::Tensor& scales, const at::Tensor& offsets,
                         const at::Tensor& output, int64_t group_size, int64_t bits, bool symmetric) {
  check_dequantize_args(packed, scales, offsets, output, group_size, bits);
  const DequantizeJob job{packed.data_ptr<uint8_t>(), scales.data_ptr<float>(), offsets.data_ptr<float>(), group_size,
                          int(bits), symmetric, output.data_ptr(), dtype_of(output.scalar_type())};
  const SimdLevel level = checked_simd_level();
  at::parallel_for(0, scales.numel(), std::max<int64_t>(1, kGrainElements / group_size),
                   [&](int64_t first, int64_t last) {
#if DS_SIMD_X86
    if (level == SimdLevel::avx512) return avx512::dequantize_groups(job, first, last);
    if (level == SimdLevel::avx2) return avx2::dequantize_groups(job, first, last);
#endif
    scalar::dequantize_groups(job, first, last);
  });
}

std::string quantizer_simd_level() { return simd_level_name(checked_simd_level()); }

}  // namespace

// The ops write into given buffers: fresh outputs of tens of MB cost more in page faults
// than the kernels take (docs/ops/quantizer.md), so callers that run every step keep theirs. quantize / dequantize in Python allocate.
TORCH_LIBRARY_FRAGMENT(deepspeed_ext, m) {
  m.def("quantize_into(Tensor input, Tensor(a!) packed, Tensor(b!) scales, Tensor(c!) offsets, int group_size, "
        "int bits, bool symmetric, bool stochastic, int seed) -> ()");
  m.def("dequantize_into(Tensor packed, Tensor scales, Tensor offsets, Tensor(a!) output, int group_size, int bits, "
        "bool symmetric) -> ()");
  m.def("quantizer_simd_level() -> str", &quantizer_simd_level);
}

TORCH_LIBRARY_IMPL(deepspeed_ext, CPU, m) {
  m.impl("quantize_into", &quantize_into_cpu);
  m.impl("dequantize_into", &dequantize_into_cpu);
}

}  // namespace ds::quantizer
