#pragma once
// The per-element update of each optimizer, written once for every backend.
//
// V is float (scalar CPU tail, CUDA) or a SIMD vector (csrc/include/simd_*.h) with the
// same operators. Kernels are compiled with contraction off (-ffp-contract=off,
// nvcc --fmad=false), so each backend rounds exactly the same operations and the
// SIMD paths match the scalar path bit for bit.
//
// Included inside each ISA's namespace, so it includes nothing but macros; the
// coefficient structs come from optimizer_coeffs.h, included at global scope first.
#include "ds_inline.h"

DS_INLINE float ds_sqrt(float x) {
#if defined(__CUDA_ARCH__)
  return sqrtf(x);
#else
  return __builtin_sqrtf(x);  // a single sqrtss with -fno-math-errno
#endif
}

DS_INLINE float ds_sign(float x) { return float(x > 0.0f) - float(x < 0.0f); }

template <class V>
DS_INLINE void adam_update(V& param, V grad, V& exp_avg, V& exp_avg_sq, const ::ds::AdamCoeffs& c) {
  if (c.l2 != 0.0f) grad = grad + V(c.l2) * param;
  if (c.decay != 1.0f) param = param * V(c.decay);
  exp_avg = V(c.beta1) * exp_avg + V(c.one_minus_beta1) * grad;
  exp_avg_sq = V(c.beta2) * exp_avg_sq + V(c.one_minus_beta2) * (grad * grad);
  const V denom = ds_sqrt(exp_avg_sq) * V(c.inv_bias_correction2_sqrt) + V(c.eps);
  param = param + V(c.neg_step_size) * (exp_avg / denom);
}

template <class V>
DS_INLINE void adagrad_update(V& param, V grad, V& sum, const ::ds::AdagradCoeffs& c) {
  if (c.l2 != 0.0f) grad = grad + V(c.l2) * param;
  sum = sum + grad * grad;
  param = param + V(c.neg_lr) * (grad / (ds_sqrt(sum) + V(c.eps)));
}

template <class V>
DS_INLINE void lion_update(V& param, V grad, V& exp_avg, const ::ds::LionCoeffs& c) {
  const V direction = V(c.beta1) * exp_avg + V(c.one_minus_beta1) * grad;
  if (c.decay != 1.0f) param = param * V(c.decay);
  param = param + V(c.neg_lr) * ds_sign(direction);
  exp_avg = V(c.beta2) * exp_avg + V(c.one_minus_beta2) * grad;
}
