// The torch side shared by every op that runs the CPU optimizer kernels (cpu_adam's ops
// and fused_adam's CPU path): tensor checks, the SIMD level, and the OpenMP split.
#include "cpu_adam_dispatch.h"

#include <algorithm>

#include <c10/util/Exception.h>

#include "simd.h"
#include "simd_level_check.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ds::cpu_optim {
namespace {

struct Kernels {
  void (*adam)(const Slot&, int64_t, int64_t, const AdamCoeffs&);
  void (*adagrad)(const Slot&, int64_t, int64_t, const AdagradCoeffs&);
  void (*lion)(const Slot&, int64_t, int64_t, const LionCoeffs&);
};

Kernels kernels_for(SimdLevel level) {
#if DS_SIMD_X86
  if (level == SimdLevel::avx512) return {avx512::adam_range, avx512::adagrad_range, avx512::lion_range};
  if (level == SimdLevel::avx2) return {avx2::adam_range, avx2::adagrad_range, avx2::lion_range};
#endif
  return {scalar::adam_range, scalar::adagrad_range, scalar::lion_range};
}

DType dtype_of(const at::Tensor& t, const char* op, const char* what, size_t i) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::f32;
    case at::kBFloat16: return DType::bf16;
    case at::kHalf: return DType::f16;
    default:
      TORCH_CHECK(false, op, ": ", what, "[", i, "] has dtype ", t.scalar_type(),
                  "; supported dtypes are float32, bfloat16 and float16");
  }
}

Buffer checked_buffer(const at::Tensor& t, const at::Tensor& param, const char* op, const char* what, size_t i) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", what, "[", i, "] is on ", t.device(),
              "; this optimizer updates CPU tensors only");
  TORCH_CHECK(t.layout() == at::kStrided, op, ": ", what, "[", i, "] is sparse; only dense tensors are supported");
  TORCH_CHECK(t.is_contiguous(), op, ": ", what, "[", i, "] is not contiguous; call .contiguous() first");
  TORCH_CHECK(t.sizes() == param.sizes(), op, ": ", what, "[", i, "] has shape ", t.sizes(),
              " but params[", i, "] has shape ", param.sizes());
  return Buffer{t.data_ptr(), dtype_of(t, op, what, i)};
}

// Calls kernel(slot_index, begin, count) over every element of every slot, split into
// ranges that OpenMP spreads across torch's intra-op threads (the same libgomp pool).
template <class Kernel>
void for_each_range(const std::vector<Slot>& slots, Kernel kernel) {
  struct Range { size_t slot; int64_t begin, count; };
  int64_t total = 0;
  for (const Slot& s : slots) total += s.numel;
#ifdef _OPENMP
  const int threads = omp_get_max_threads();
#else
  const int threads = 1;
#endif
  // Enough ranges to balance threads, each large enough to amortise scheduling.
  int64_t range = total / (int64_t(threads) * 4);
  range = std::min<int64_t>(std::max<int64_t>(range, 16384), 262144);
  std::vector<Range> ranges;
  for (size_t i = 0; i < slots.size(); ++i)
    for (int64_t b = 0; b < slots[i].numel; b += range)
      ranges.push_back({i, b, std::min(range, slots[i].numel - b)});
  const int64_t count = static_cast<int64_t>(ranges.size());
#pragma omp parallel for schedule(static) if (threads > 1 && count > 1 && total >= 32768)
  for (int64_t r = 0; r < count; ++r) kernel(ranges[r].slot, ranges[r].begin, ranges[r].count);
}

Kernels active_kernels() { return kernels_for(checked_simd_level()); }

}  // namespace

std::vector<Slot> make_slots(const char* op, at::TensorList params, at::TensorList grads, at::TensorList state0,
                             at::TensorList state1, at::TensorList copies, bool two_states) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && state0.size() == n && (!two_states || state1.size() == n),
              op, ": params, grads and optimizer states must be lists of the same length");
  TORCH_CHECK(copies.empty() || copies.size() == n, op, ": param_copies must be empty or one per param, got ",
              copies.size(), " for ", n, " params");
  std::vector<Slot> slots(n);
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    Slot& s = slots[i];
    s.param = checked_buffer(p, p, op, "params", i);
    s.grad = checked_buffer(grads[i], p, op, "grads", i);
    TORCH_CHECK(s.grad.dtype == s.param.dtype, op, ": grads[", i, "] has dtype ", grads[i].scalar_type(),
                " but params[", i, "] has dtype ", p.scalar_type());
    s.state0 = checked_buffer(state0[i], p, op, "states", i);
    if (two_states) s.state1 = checked_buffer(state1[i], p, op, "states", i);
    for (const Buffer* state : {&s.state0, &s.state1}) {
      TORCH_CHECK(state->data == nullptr || state->dtype == DType::f32 || state->dtype == s.param.dtype, op,
                  ": optimizer states of params[", i, "] must be float32 or ", p.scalar_type());
    }
    if (!copies.empty()) s.copy = checked_buffer(copies[i], p, op, "param_copies", i);
    s.numel = p.numel();
  }
  return slots;
}

void run_adam(const std::vector<Slot>& slots, const std::vector<AdamCoeffs>& coeffs) {
  const Kernels k = active_kernels();
  for_each_range(slots, [&](size_t i, int64_t b, int64_t n) { k.adam(slots[i], b, n, coeffs[i]); });
}

void run_adagrad(const std::vector<Slot>& slots, const AdagradCoeffs& c) {
  const Kernels k = active_kernels();
  for_each_range(slots, [&](size_t i, int64_t b, int64_t n) { k.adagrad(slots[i], b, n, c); });
}

void run_lion(const std::vector<Slot>& slots, const LionCoeffs& c) {
  const Kernels k = active_kernels();
  for_each_range(slots, [&](size_t i, int64_t b, int64_t n) { k.lion(slots[i], b, n, c); });
}

std::string active_simd_level_name() { return simd_level_name(checked_simd_level()); }

}  // namespace ds::cpu_optim
