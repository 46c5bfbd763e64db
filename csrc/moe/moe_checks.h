#pragma once
// Input checks shared by the CPU and CUDA impls of the MoE ops: every assumption the kernels
// make, as an error that names the op and the argument. Slot values are checked where the
// kernels read them (a bad slot is reported, never read).
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "moe.h"

namespace ds::moe {

inline DType dtype_of(at::ScalarType type) {
  return type == at::kFloat ? DType::f32 : (type == at::kBFloat16 ? DType::bf16 : DType::f16);
}

inline void check_rows(const char* op, const char* name, const at::Tensor& rows) {
  const auto type = rows.scalar_type();
  TORCH_CHECK(type == at::kFloat || type == at::kBFloat16 || type == at::kHalf, op, ": ", name, " has dtype ", type,
              "; supported are float32, bfloat16 and float16");
  TORCH_CHECK(rows.dim() == 2 && rows.is_contiguous(), op, ": ", name,
              " must be a contiguous 2-D (rows, hidden) tensor, got shape ", rows.sizes());
}

// The routing of `op` as the kernels see it; `rows` is the tensor whose device the others must share.
inline Routing check_routing(const char* op, const at::Tensor& rows, const at::Tensor& slots,
                             const std::optional<at::Tensor>& weights, int64_t tokens) {
  TORCH_CHECK(slots.scalar_type() == at::kLong && slots.dim() == 2 && slots.is_contiguous(), op,
              ": slots must be a contiguous 2-D (tokens, k) int64 tensor, got ", slots.scalar_type(), " of shape ",
              slots.sizes());
  TORCH_CHECK(slots.size(0) == tokens, op, ": slots has ", slots.size(0), " rows for ", tokens, " tokens");
  TORCH_CHECK(slots.device() == rows.device(), op, ": slots is on ", slots.device(), ", the rows on ", rows.device());
  if (weights) {
    TORCH_CHECK(weights->scalar_type() == at::kFloat && weights->is_contiguous() &&
                    weights->sizes() == slots.sizes() && weights->device() == rows.device(),
                op, ": weights must be a contiguous float32 tensor shaped like slots ", slots.sizes(), " on ",
                rows.device(), ", got ", weights->scalar_type(), " of shape ", weights->sizes(), " on ",
                weights->device());
  }
  return Routing{dtype_of(rows.scalar_type()), rows.size(1), slots.size(1), slots.data_ptr<int64_t>(),
                 weights ? weights->data_ptr<float>() : nullptr};
}

inline void check_same_rows(const char* op, const at::Tensor& a, const char* a_name, const at::Tensor& b,
                            const char* b_name) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type() && a.size(1) == b.size(1) && a.device() == b.device(), op, ": ",
              a_name, " (", a.scalar_type(), ", hidden ", a.size(1), ", ", a.device(), ") and ", b_name, " (",
              b.scalar_type(), ", hidden ", b.size(1), ", ", b.device(), ") must share dtype, hidden size and device");
}

// What a bad slot found by a kernel means: `bad` is the flat (token * k + route) index.
[[noreturn]] inline void bad_slot(const char* op, int64_t bad, int64_t routes, int64_t slot, int64_t num_slots,
                                  bool duplicate) {
  if (duplicate) {
    TORCH_CHECK(false, op, ": slot ", slot, " is given to two routes (token ", bad / routes, ", route ", bad % routes,
                " is the second); each expert-buffer slot holds one token");
  }
  TORCH_CHECK(false, op, ": slots[", bad / routes, ", ", bad % routes, "] = ", slot, " is outside the ", num_slots,
              " expert-buffer slots (use -1 for a dropped route)");
}

}  // namespace ds::moe
