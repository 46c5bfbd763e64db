#pragma once
// Group-wise quantization, written once for the CPU kernels (every SIMD level) and the
// CUDA kernels, so every path picks the same scale and rounds every element the same way.
//
// A group is stored as integers q with one scale and offset: x ~= q * scale + offset.
// Symmetric: q in [-(2^(b-1) - 1), 2^(b-1) - 1], offset 0, scale = max|x| / (2^(b-1) - 1).
// Asymmetric: q in [0, 2^b - 1], offset = min x, scale = (max x - min x) / (2^b - 1).
// A group whose values are all equal gets scale 0 (and q = 0): it dequantizes exactly.
// tiny_group: so does a group whose spread is so small (max|x| or max - min below about
// 1e-37) that 1 / scale overflows fp32; it dequantizes to 0 (or its min), an error below
// that spread, where scaling by inf would have sent its values to the ends of the range.
//
// Included inside each ISA's namespace, so it includes nothing but macros.
#include "ds_inline.h"

struct QuantParams {
  float scale;      // dequantize: q * scale + offset
  float inv_scale;  // quantize: (x - offset) * inv_scale, then round
  float offset;
  float qmin, qmax;
};

DS_INLINE QuantParams symmetric_params(float absmax, int bits) {
  const float qmax = float((1 << (bits - 1)) - 1);
  const float inv_scale = qmax / absmax;
  if (!(inv_scale < __builtin_inff())) return {0.0f, 0.0f, 0.0f, -qmax, qmax};  // see tiny_group
  return {absmax / qmax, inv_scale, 0.0f, -qmax, qmax};
}

DS_INLINE QuantParams asymmetric_params(float lo, float hi, int bits) {
  const float levels = float((1 << bits) - 1);
  const float range = hi - lo;
  const float inv_scale = levels / range;
  if (!(inv_scale < __builtin_inff())) return {0.0f, 0.0f, lo, 0.0f, levels};  // see tiny_group
  return {range / levels, inv_scale, lo, 0.0f, levels};
}

// A stateless hash of (key, element index): every backend, thread and SIMD lane draws the
// same uniform number for the same element, so stochastic rounding is reproducible.
// The SIMD kernels hash eight or sixteen indices at once with the same steps and constants.
constexpr unsigned int kMixMultiply1 = 0x7feb352du, kMixMultiply2 = 0x846ca68bu;

DS_INLINE unsigned int mix32(unsigned int x) {
  x ^= x >> 16;
  x *= kMixMultiply1;
  x ^= x >> 15;
  x *= kMixMultiply2;
  x ^= x >> 16;
  return x;
}

DS_INLINE unsigned int stochastic_key(unsigned long long seed) {
  return mix32(static_cast<unsigned int>(seed >> 32) + 0x9e3779b9u) ^ static_cast<unsigned int>(seed);
}

// Uniform in [0, 1) with 24 random bits (exact in fp32).
DS_INLINE float uniform01(unsigned int key, unsigned int index) {
  return float(int(mix32(index ^ key) >> 8)) * (1.0f / 16777216.0f);  // int: converts in SIMD everywhere
}

DS_INLINE float ds_rint(float x) {
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  return __builtin_rintf(x);  // round half to even, as the SIMD round instructions do
#endif
}

DS_INLINE float ds_floor(float x) {
#if defined(__CUDA_ARCH__)
  return floorf(x);
#else
  return __builtin_floorf(x);
#endif
}

DS_INLINE float ds_max(float a, float b) { return a > b ? a : b; }
DS_INLINE float ds_min(float a, float b) { return a < b ? a : b; }

// max(hi, |v|) compared as bit patterns: the same order as floats for non-negative values,
// and NaN (the largest pattern) is kept rather than dropped as a float max would, so a
// symmetric group's scan needs no separate inf / NaN probe. The SIMD levels have a VecF twin.
DS_INLINE float max_magnitude(float hi, float v) {
  const float magnitude = __builtin_fabsf(v);
  unsigned int a, b;
  __builtin_memcpy(&a, &hi, 4);
  __builtin_memcpy(&b, &magnitude, 4);
  return b > a ? magnitude : hi;
}

// The largest magnitude bit pattern of 16-bit floats x[i, n) and `hi`: the 16-bit twin of
// max_magnitude, finishing the SIMD scans' tails and serving as the scalar level's scan.
DS_INLINE unsigned short max_magnitude_bits_from(const unsigned short* x, long long i, long long n, unsigned short hi) {
  for (; i < n; ++i) {
    const unsigned short magnitude = static_cast<unsigned short>(x[i] & 0x7fff);
    hi = magnitude > hi ? magnitude : hi;
  }
  return hi;
}

// The integer level of one element: round to nearest (ties to even), or stochastically
// (down or up with probability given by the distance), clamped to the range.
// V is float, or a SIMD kernel's VecF (which has the same functions per lane), so one
// formula serves every path; the input is finite, so max/min order cannot matter.
// Symmetric groups have offset 0, and x - 0 == x exactly, so skipping it changes no result.
template <class V>
DS_INLINE V scaled_level(V x, const QuantParams& p, bool symmetric) {
  return symmetric ? x * V(p.inv_scale) : (x - V(p.offset)) * V(p.inv_scale);
}

// The bounds are integers, so clamping before rounding gives what clamping after would; the
// SIMD kernels use that to leave round-to-nearest to the float -> int conversion they need anyway.
template <class V>
DS_INLINE V clamp_level(V level, const QuantParams& p) {
  return ds_min(ds_max(level, V(p.qmin)), V(p.qmax));  // a NaN level (0 * inf) becomes qmin
}

template <class V>
DS_INLINE V quantize_level(V x, const QuantParams& p, bool symmetric, bool stochastic, V uniform) {
  const V t = scaled_level(x, p, symmetric);
  return stochastic ? clamp_level(ds_floor(t + uniform), p) : ds_rint(clamp_level(t, p));
}

template <class V>
DS_INLINE V dequantize_level(V level, float scale, float offset, bool symmetric) {
  return symmetric ? level * V(scale) : level * V(scale) + V(offset);
}

// int4: two levels a byte, the even element in the low nibble. Symmetric levels are
// stored as 4-bit two's complement.
DS_INLINE unsigned char pack_nibbles(int low, int high) {
  return static_cast<unsigned char>((low & 0xF) | ((high & 0xF) << 4));
}

DS_INLINE int unpack_nibble(unsigned char byte, int which, bool symmetric) {
  const int nibble = (byte >> (4 * which)) & 0xF;
  return symmetric && nibble >= 8 ? nibble - 16 : nibble;
}
