#pragma once
// Scalar fp32 <-> bf16 / fp16 conversions, bit-exact with PyTorch (round to nearest
// even; NaN stays NaN). The SIMD paths convert in hardware and must agree with these
// bit for bit, which tests/ops/test_cpu_adam.py checks. Needs <cstdint> included first.
#include "ds_inline.h"

DS_INLINE uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  __builtin_memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

DS_INLINE float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  __builtin_memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

DS_INLINE float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

DS_INLINE uint16_t float_to_bf16(float f) {
  const uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // PyTorch canonicalises NaN
  const uint32_t round_to_even = 0x7fffu + ((u >> 16) & 1u);
  return uint16_t((u + round_to_even) >> 16);
}

DS_INLINE float fp16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) {  // inf or NaN; a NaN comes back quiet, as vcvtph2ps does
    return bits_to_float(sign | 0x7f800000u | (mantissa << 13) | (mantissa ? 0x400000u : 0u));
  }
  if (exponent == 0) {
    if (mantissa == 0) return bits_to_float(sign);
    exponent = 1;  // subnormal: shift the leading one into the implicit bit
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    mantissa &= 0x3ffu;
  }
  return bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

DS_INLINE uint16_t float_to_fp16(float f) {
  uint32_t u = float_to_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return sign | 0x7e00u | uint16_t((u >> 13) & 0x3ffu);  // quiet NaN, as vcvtps2ph
  if (u >= 0x477ff000u) return sign | 0x7c00u;  // rounds to infinity (or is infinity)
  if (u >= 0x38800000u) {                       // normal half
    const uint32_t round_to_even = 0xfffu + ((u >> 13) & 1u);
    return sign | uint16_t((u + round_to_even - 0x38000000u) >> 13);
  }
  if (u <= 0x33000000u) return sign;  // at most half of the smallest subnormal: ties to zero
  const uint32_t shift = 126u - (u >> 23);  // subnormal half: mantissa scaled to units of 2^-24
  const uint32_t mantissa = (u & 0x7fffffu) | 0x800000u;
  uint32_t rounded = mantissa >> shift;
  const uint32_t remainder = mantissa & ((1u << shift) - 1u);
  const uint32_t halfway = 1u << (shift - 1u);
  if (remainder > halfway || (remainder == halfway && (rounded & 1u))) ++rounded;
  return sign | uint16_t(rounded);
}
