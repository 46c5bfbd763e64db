#pragma once
// Block-sparse softmax, per element, written once for the CPU kernels (every SIMD level) and
// the CUDA kernels, for float (fp32 / bf16 / fp16 inputs) and double (fp64 inputs).
// Included inside each ISA's namespace, so it includes nothing but macros.
#include "ds_inline.h"

// How a mask is applied: added to the score, or (mul) 0 masks the key and anything else keeps it.
enum MaskMode : int { kMaskNone = 0, kMaskAdd = 1, kMaskMul = 2 };

template <class T>
DS_INLINE T negative_infinity() {
  return -T(__builtin_huge_val());
}

DS_INLINE double ds_exp(double x) {
#if defined(__CUDA_ARCH__)
  return exp(x);
#else
  return __builtin_exp(x);
#endif
}

template <class T>
DS_INLINE T apply_mask(T x, T mask, int mode) {
  if (mode == kMaskAdd) return x + mask;
  if (mode == kMaskMul && mask == T(0)) return negative_infinity<T>();
  return x;
}

// The logit of one (query, key) pair: scaled score, relative position bias, masks, and
// causality (a key after its query is masked).
template <class T>
DS_INLINE T attention_logit(T score, T scale, T bias, T key_padding, int key_padding_mode, T attention,
                            int attention_mode, bool future) {
  if (future) return negative_infinity<T>();
  const T x = apply_mask(score * scale + bias, key_padding, key_padding_mode);
  return apply_mask(x, attention, attention_mode);
}

// exp(x) for x <= 0 (a logit minus its row's max), to about 2 ulp: 2^n p(r) with
// r = x - n ln2 in [-ln2/2, ln2/2] and Cephes' degree-6 polynomial for p. Branch-free apart
// from the underflow select, so CPU loops over it vectorize; the GPU runs the same formula.
DS_INLINE float softmax_exp(float x) {
#if defined(__CUDA_ARCH__)
  const float n = rintf(x * 1.44269504088896341f);
#else
  const float n = __builtin_rintf(x * 1.44269504088896341f);
#endif
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int exponent = (int(n) + 127) << 23;
#if defined(__CUDA_ARCH__)
  const float scale = __int_as_float(exponent);
#else
  float scale;
  __builtin_memcpy(&scale, &exponent, sizeof(scale));
#endif
  return x < -87.0f ? 0.0f : p * scale;  // below that 2^n is not a normal float; -inf gives 0
}

DS_INLINE double softmax_exp(double x) { return ds_exp(x); }  // fp64 (gradcheck): the library's

// exp(logit - row max); a row whose every key is masked gives zeros, not NaN.
template <class T>
DS_INLINE T unnormalized_probability(T logit, T row_max) {
  return row_max == negative_infinity<T>() ? T(0) : softmax_exp(logit - row_max);
}

// The running max of a row's logits. A NaN logit makes the max NaN (`value > current` alone
// would step over it), so the whole row comes out NaN, as dense attention's softmax gives.
template <class T>
DS_INLINE T max_keeping_nan(T value, T current) {
  return (value > current || value != value) ? value : current;
}

// 1 / the row's sum of unnormalized probabilities: a row whose every key is masked sums to 0
// and gives zeros; a NaN sum (a NaN or +inf logit) stays NaN.
template <class T>
DS_INLINE T row_normalizer(T sum) {
  return sum == T(0) ? T(0) : T(1) / sum;
}

// d loss / d score from d loss / d probability: p * (dp - sum_row(p * dp)) * scale.
template <class T>
DS_INLINE T softmax_score_grad(T probability, T grad, T row_dot, T scale) {
  return probability * (grad - row_dot) * scale;
}
