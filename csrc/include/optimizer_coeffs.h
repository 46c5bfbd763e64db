#pragma once
// Per-tensor optimizer scalars. The host computes them once per step in double
// precision (as torch.optim does in Python), so kernels never call pow or sqrt on
// a scalar and every backend (scalar, AVX2, AVX-512, CUDA) sees the same floats.
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
