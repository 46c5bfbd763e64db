#pragma once
// Runs the CPU optimizer kernels on torch tensors: what cpu_adam's ops and fused_adam's
// CPU path share. Only ATen's Tensor header, to keep the JIT build short.
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "cpu_adam.h"

namespace ds::cpu_optim {

// Checks the tensor lists (device, layout, contiguity, shapes, dtypes; states fp32 or the
// param dtype; grads the param dtype) and turns them into kernel slots. `op` names the
// caller in error messages; state1 and copies may be empty.
std::vector<Slot> make_slots(const char* op, at::TensorList params, at::TensorList grads, at::TensorList state0,
                             at::TensorList state1, at::TensorList copies, bool two_states);

// Update every element of every slot across torch's intra-op threads, at the SIMD level
// DS_SIMD and the CPU allow. Adam takes one coefficient set per slot (steps may differ).
void run_adam(const std::vector<Slot>& slots, const std::vector<AdamCoeffs>& coeffs);
void run_adagrad(const std::vector<Slot>& slots, const AdagradCoeffs& c);
void run_lion(const std::vector<Slot>& slots, const LionCoeffs& c);

std::string active_simd_level_name();

}  // namespace ds::cpu_optim
