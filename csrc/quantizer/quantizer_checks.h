#pragma once
// Input checks shared by the CPU and CUDA impls of the quantizer ops: every assumption the
// kernels make, as an error that names the argument.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "quantizer.h"

namespace ds::quantizer {

inline DType dtype_of(at::ScalarType type) {
  return type == at::kFloat ? DType::f32 : (type == at::kBFloat16 ? DType::bf16 : DType::f16);
}

inline bool is_float_type(at::ScalarType type) {
  return type == at::kFloat || type == at::kBFloat16 || type == at::kHalf;
}

inline void check_buffer(const at::Tensor& t, const at::Tensor& input, const char* op, const char* name,
                         at::ScalarType dtype, int64_t numel) {
  TORCH_CHECK(t.scalar_type() == dtype && t.device() == input.device() && t.is_contiguous() && t.numel() == numel,
              op, ": ", name, " must be a contiguous ", dtype, " tensor of ", numel, " elements on ", input.device(),
              ", got ", t.scalar_type(), " of ", t.numel(), " on ", t.device());
}

// The number of groups.
inline int64_t check_quantize_outputs(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& scales,
                                      const at::Tensor& offsets, int64_t group_size, int64_t bits, bool stochastic) {
  TORCH_CHECK(bits == 8 || bits == 4, "quantize: bits must be 8 or 4, got ", bits);
  TORCH_CHECK(is_float_type(input.scalar_type()), "quantize: input has dtype ", input.scalar_type(),
              "; supported are float32, bfloat16 and float16");
  TORCH_CHECK(input.is_contiguous(), "quantize: input is not contiguous; call .contiguous() first");
  TORCH_CHECK(group_size >= 1, "quantize: group_size must be positive, got ", group_size);
  TORCH_CHECK(input.numel() % group_size == 0, "quantize: input has ", input.numel(),
              " elements, not a multiple of group_size ", group_size, " (pad it, or pick a divisor)");
  TORCH_CHECK(bits == 8 || group_size % 2 == 0, "quantize: 4-bit groups pack two values a byte, so group_size must "
              "be even, got ", group_size);
  TORCH_CHECK(!stochastic || input.numel() <= (int64_t(1) << 32),
              "quantize: stochastic rounding numbers elements with 32 bits; split inputs above 2^32 elements");
  const int64_t groups = input.numel() / group_size;
  check_buffer(packed, input, "quantize", "packed", at::kByte, input.numel() * bits / 8);
  check_buffer(scales, input, "quantize", "scales", at::kFloat, groups);
  check_buffer(offsets, input, "quantize", "offsets", at::kFloat, groups);
  return groups;
}

inline void check_finite(int64_t bad_group, int64_t group_size) {
  TORCH_CHECK(bad_group < 0, "quantize: input has inf or NaN (group ", bad_group, ", elements ",
              bad_group * group_size, "..", (bad_group + 1) * group_size - 1, "); quantization needs finite values");
}

inline void check_dequantize_args(const at::Tensor& packed, const at::Tensor& scales, const at::Tensor& offsets,
                                  const at::Tensor& output, int64_t group_size, int64_t bits) {
  TORCH_CHECK(bits == 8 || bits == 4, "dequantize: bits must be 8 or 4, got ", bits);
  TORCH_CHECK(group_size >= 1 && (bits == 8 || group_size % 2 == 0), "dequantize: bad group_size ", group_size);
  TORCH_CHECK(is_float_type(output.scalar_type()), "dequantize: output must be float32, bfloat16 or float16, got ",
              output.scalar_type());
  const int64_t groups = scales.numel();
  check_buffer(scales, packed, "dequantize", "scales", at::kFloat, groups);
  check_buffer(offsets, packed, "dequantize", "offsets", at::kFloat, groups);
  check_buffer(packed, packed, "dequantize", "packed", at::kByte, groups * group_size * bits / 8);
  check_buffer(output, packed, "dequantize", "output", output.scalar_type(), groups * group_size);
}

}  // namespace ds::quantizer
