#pragma once
// Per-tensor optimizer scalars. The host computes them once per step in double
// precision (as torch.optim does in Python), so kernels never call pow or sqrt on
// a scalar and every backend (scalar, AVX2, AVX-512, CUDA) sees the same floats.
#include <math.h>

#include "ds_inline.h"

namespace ds {

struct AdamCoeffs {
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float eps;
  float neg_step_size;          // -lr / (1 - beta1^step), or -lr without bias correction
  float inv_bias_correction2_sqrt;  // 1 / sqrt(1 - beta2^step), or 1: a multiply, not a divide
  float l2;                     // Adam: weight decay added to the gradient, else 0
  float decay;                  // AdamW: 1 - lr * weight_decay applied to the param, else 1
};

// Adam's scalars for one tensor at `step` (counted from 1). Host and device both call
// this, so the CPU and CUDA kernels start from identical floats.
DS_INLINE AdamCoeffs make_adam_coeffs(double lr, double beta1, double beta2, double eps, double weight_decay,
                                      double step, bool bias_correction, bool adamw_mode) {
  const double bc1 = bias_correction ? 1.0 - pow(beta1, step) : 1.0;
  const double bc2 = bias_correction ? 1.0 - pow(beta2, step) : 1.0;
  return AdamCoeffs{float(beta1), float(1.0 - beta1), float(beta2), float(1.0 - beta2), float(eps),
                    float(-lr / bc1), float(1.0 / sqrt(bc2)), adamw_mode ? 0.0f : float(weight_decay),
                    adamw_mode ? float(1.0 - lr * weight_decay) : 1.0f};
}

struct AdagradCoeffs {
  float eps;
  float neg_lr;
  float l2;
};

struct LionCoeffs {
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float neg_lr;
  float decay;  // 1 - lr * weight_decay
};

}  // namespace ds
