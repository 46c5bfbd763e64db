#pragma once
// Input checks shared by the CPU and CUDA impls of the quantizer ops: every assumption the
// kernels make, as an error that names the argument.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace ds::quantizer {

// The number of groups.
inline int64_t check_quantize_args(const at::Tensor& input, int64_t group_size, int64_t bits, bool stochastic) {
  TORCH_CHECK(bits == 8 || bits == 4, "quantize: bits must be 8 or 4, got ", bits);
  const auto type = input.scalar_type();
  TORCH_CHECK(type == at::kFloat || type == at::kBFloat16 || type == at::kHalf,
              "quantize: input has dtype ", type, "; supported are float32, bfloat16 and float16");
  TORCH_CHECK(input.is_contiguous(), "quantize: input is not contiguous; call .contiguous() first");
  TORCH_CHECK(group_size >= 1, "quantize: group_size must be positive, got ", group_size);
  TORCH_CHECK(input.numel() % group_size == 0, "quantize: input has ", input.numel(),
              " elements, not a multiple of group_size ", group_size, " (pad it, or pick a divisor)");
  TORCH_CHECK(bits == 8 || group_size % 2 == 0, "quantize: 4-bit groups pack two values a byte, so group_size must "
              "be even, got ", group_size);
  TORCH_CHECK(!stochastic || input.numel() <= (int64_t(1) << 32),
              "quantize: stochastic rounding numbers elements with 32 bits; split inputs above 2^32 elements");
  return input.numel() / group_size;
}

inline void check_dequantize_args(const at::Tensor& packed, const at::Tensor& scales, const at::Tensor& offsets,
                                  int64_t group_size, int64_t bits, at::ScalarType dtype) {
  TORCH_CHECK(bits == 8 || bits == 4, "dequantize: bits must be 8 or 4, got ", bits);
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf,
              "dequantize: dtype must be float32, bfloat16 or float16, got ", dtype);
  TORCH_CHECK(packed.scalar_type() == at::kByte, "dequantize: packed must be uint8 (what quantize returns), got ",
              packed.scalar_type());
  for (const at::Tensor* t : {&scales, &offsets})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->device() == packed.device(),
                "dequantize: scales and offsets must be contiguous float32 tensors on ", packed.device());
  TORCH_CHECK(packed.is_contiguous(), "dequantize: packed is not contiguous");
  TORCH_CHECK(scales.numel() == offsets.numel(), "dequantize: ", scales.numel(), " scales but ", offsets.numel(),
              " offsets");
  TORCH_CHECK(group_size >= 1 && (bits == 8 || group_size % 2 == 0), "dequantize: bad group_size ", group_size);
  TORCH_CHECK(packed.numel() * 8 == scales.numel() * group_size * bits, "dequantize: packed has ", packed.numel(),
              " bytes; ", scales.numel(), " groups of ", group_size, " ", bits, "-bit values need ",
              scales.numel() * group_size * bits / 8);
}

}  // namespace ds::quantizer
