// The fused_adam op: one multi-tensor Adam step with a device-side step count and an
// overflow no-op flag, so a training loop never has to sync with the device. This file
// holds the schema and the CPU impl (the CPU optimizer kernels); fused_adam_cuda.cpp and
// fused_adam.cu hold the CUDA impl.
#include <torch/library.h>

#include <vector>

#include "cpu_adam_dispatch.h"

namespace ds::cpu_optim {
namespace {

void fused_adam_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                         at::TensorList exp_avg_sqs, at::TensorList steps, const at::Tensor& noop_flag, double lr,
                         double beta1, double beta2, double eps, double weight_decay, bool bias_correction,
                         bool adamw_mode) {
  const char* op = "fused_adam_step";
  TORCH_CHECK(noop_flag.numel() == 1 && noop_flag.scalar_type() == at::kInt && noop_flag.device().is_cpu(), op,
              ": noop_flag must be a one-element int32 tensor on the params' device");
  auto slots = make_slots(op, params, grads, exp_avgs, exp_avg_sqs, {}, true);
  TORCH_CHECK(steps.size() == slots.size(), op, ": steps must hold one step tensor per param");
  for (size_t i = 0; i < steps.size(); ++i) {
    TORCH_CHECK(steps[i].numel() == 1 && steps[i].scalar_type() == at::kFloat && steps[i].device().is_cpu(), op,
                ": steps[", i, "] must be a one-element float32 tensor on the params' device");
  }
  if (*noop_flag.data_ptr<int>() != 0) return;  // an overflow was found: this step never happened
  std::vector<AdamCoeffs> coeffs(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    float& step = *steps[i].data_ptr<float>();
    step += 1.0f;
    coeffs[i] = make_adam_coeffs(lr, beta1, beta2, eps, weight_decay, double(step), bias_correction, adamw_mode);
  }
  run_adam(slots, coeffs);
}

}  // namespace
}  // namespace ds::cpu_optim

TORCH_LIBRARY_FRAGMENT(deepspeed_ext, m) {
  m.def("fused_adam_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
        "Tensor(d!)[] steps, Tensor noop_flag, float lr, float beta1, float beta2, float eps, float weight_decay, "
        "bool bias_correction, bool adamw_mode) -> ()");
}

TORCH_LIBRARY_IMPL(deepspeed_ext, CPU, m) { m.impl("fused_adam_step", &ds::cpu_optim::fused_adam_step_cpu); }
