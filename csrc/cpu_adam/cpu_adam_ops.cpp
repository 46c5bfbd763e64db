// The cpu_adam op library: schemas and CPU impls of the Adam, Adagrad and Lion steps.
// Checks and threading live in cpu_adam_dispatch.cpp, the arithmetic in
// cpu_adam_kernels.inc and csrc/include/optimizer_math.h.
#include <torch/library.h>

#include <string>
#include <vector>

#include "cpu_adam_dispatch.h"

namespace ds::cpu_optim {
namespace {

void cpu_adam_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                   at::TensorList param_copies, at::IntArrayRef steps, double lr, double beta1, double beta2,
                   double eps, double weight_decay, bool bias_correction, bool adamw_mode) {
  const char* op = "cpu_adam_step";
  auto slots = make_slots(op, params, grads, exp_avgs, exp_avg_sqs, param_copies, true);
  TORCH_CHECK(steps.size() == slots.size(), op, ": steps must hold one step count per param");
  std::vector<AdamCoeffs> coeffs(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    TORCH_CHECK(steps[i] >= 1, op, ": steps[", i, "] is ", steps[i], "; step counts start at 1");
    coeffs[i] = make_adam_coeffs(lr, beta1, beta2, eps, weight_decay, double(steps[i]), bias_correction, adamw_mode);
  }
  run_adam(slots, coeffs);
}

void cpu_adagrad_step(at::TensorList params, at::TensorList grads, at::TensorList sums, at::TensorList param_copies,
                      double lr, double eps, double weight_decay) {
  run_adagrad(make_slots("cpu_adagrad_step", params, grads, sums, {}, param_copies, false),
              AdagradCoeffs{float(eps), float(-lr), float(weight_decay)});
}

void cpu_lion_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList param_copies,
                   double lr, double beta1, double beta2, double weight_decay) {
  run_lion(make_slots("cpu_lion_step", params, grads, exp_avgs, {}, param_copies, false),
           LionCoeffs{float(beta1), float(1.0 - beta1), float(beta2), float(1.0 - beta2), float(-lr),
                      float(1.0 - lr * weight_decay)});
}

}  // namespace
}  // namespace ds::cpu_optim

TORCH_LIBRARY_FRAGMENT(deepspeed_ext, m) {
  m.def("cpu_adam_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
        "Tensor(d!)[] param_copies, int[] steps, float lr, float beta1, float beta2, float eps, "
        "float weight_decay, bool bias_correction, bool adamw_mode) -> ()");
  m.def("cpu_adagrad_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] sums, Tensor(d!)[] param_copies, "
        "float lr, float eps, float weight_decay) -> ()");
  m.def("cpu_lion_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(d!)[] param_copies, "
        "float lr, float beta1, float beta2, float weight_decay) -> ()");
  m.def("cpu_adam_simd_level() -> str", &ds::cpu_optim::active_simd_level_name);
}

TORCH_LIBRARY_IMPL(deepspeed_ext, CPU, m) {
  m.impl("cpu_adam_step", &ds::cpu_optim::cpu_adam_step);
  m.impl("cpu_adagrad_step", &ds::cpu_optim::cpu_adagrad_step);
  m.impl("cpu_lion_step", &ds::cpu_optim::cpu_lion_step);
}
