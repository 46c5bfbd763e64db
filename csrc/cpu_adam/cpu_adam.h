#pragma once
// What the PyTorch-facing op (cpu_adam_ops.cpp) hands to the per-ISA kernels:
// raw pointers and dtypes only, so the kernel files compile without torch headers.
#include <cstdint>

#include "optimizer_coeffs.h"

namespace ds::cpu_optim {

enum class DType : uint8_t { f32, bf16, f16 };

struct Buffer {
  void* data = nullptr;  // null: absent (no second state, no low-precision copy)
  DType dtype = DType::f32;
};

// One parameter tensor and everything its update reads or writes, all of `numel` elements.
struct Slot {
  Buffer param, grad, state0, state1, copy;
  int64_t numel = 0;
};

// Each kernel updates elements [begin, begin + count) of one slot.
#define DS_DECLARE_CPU_OPTIMIZER_KERNELS                                                   \
  void adam_range(const Slot& slot, int64_t begin, int64_t count, const ::ds::AdamCoeffs& c); \
  void adagrad_range(const Slot& slot, int64_t begin, int64_t count, const ::ds::AdagradCoeffs& c); \
  void lion_range(const Slot& slot, int64_t begin, int64_t count, const ::ds::LionCoeffs& c);

namespace scalar { DS_DECLARE_CPU_OPTIMIZER_KERNELS }
namespace avx2 { DS_DECLARE_CPU_OPTIMIZER_KERNELS }
namespace avx512 { DS_DECLARE_CPU_OPTIMIZER_KERNELS }

}  // namespace ds::cpu_optim
