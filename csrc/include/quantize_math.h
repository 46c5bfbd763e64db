#pragma once
// Group-wise quantization, written once for the CPU kernels (every SIMD level) and the
// CUDA kernels, so every path picks the same scale and rounds every element the same way.
//
// A group is stored as integers q with one scale and offset: x ~= q * scale + offset.
// Symmetric: q in [-(2^(b-1) - 1), 2^(b-1) - 1], offset 0, scale = max|x| / (2^(b-1) - 1).
// Asymmetric: q in [0, 2^b - 1], offset = min x, scale = (max x - min x) / (2^b - 1).
// A group whose values are all equal gets scale 0 (and q = 0): it dequantizes exactly.
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
  if (absmax == 0.0f) return {0.0f, 0.0f, 0.0f, -qmax, qmax};
  return {absmax / qmax, qmax / absmax, 0.0f, -qmax, qmax};
}

DS_INLINE QuantParams asymmetric_params(float lo, float hi, int bits) {
  const float levels = float((1 << bits) - 1);
  const float range = hi - lo;
  if (range == 0.0f) return {0.0f, 0.0f, lo, 0.0f, levels};
  return {range / levels, levels / range, lo, 0.0f, levels};
}

// A stateless hash of (key, element index): every backend, thread and SIMD lane draws the
// same uniform number for the same element, so stochastic rounding is reproducible.
DS_INLINE unsigned int mix32(unsigned int x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
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

// The integer level of one element: round to nearest (ties to even), or stochastically
// (down or up with probability given by the distance), clamped to the range.
DS_INLINE float quantize_level(float x, const QuantParams& p, bool stochastic, float uniform) {
  const float t = (x - p.offset) * p.inv_scale;
  const float level = stochastic ? ds_floor(t + uniform) : ds_rint(t);
  return level < p.qmin ? p.qmin : (level > p.qmax ? p.qmax : level);
}

DS_INLINE float dequantize_level(float level, float scale, float offset) { return level * scale + offset; }

// int4: two levels a byte, the even element in the low nibble. Symmetric levels are
// stored as 4-bit two's complement.
DS_INLINE unsigned char pack_nibbles(int low, int high) {
  return static_cast<unsigned char>((low & 0xF) | ((high & 0xF) << 4));
}

DS_INLINE int unpack_nibble(unsigned char byte, int which, bool symmetric) {
  const int nibble = (byte >> (4 * which)) & 0xF;
  return symmetric && nibble >= 8 ? nibble - 16 : nibble;
}
