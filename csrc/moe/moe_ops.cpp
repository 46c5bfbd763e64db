// The MoE op library: schemas and the CPU impls (rows split across torch's intra-op threads,
// each range run at the SIMD level DS_SIMD and the CPU allow).
//   moe_dispatch(x, slots, num_slots, weights?) -> (num_slots, hidden): slot s holds
//       weight * x[token] of the route given s, zeros where no route is
//   moe_combine(y, slots, weights?) -> (tokens, hidden): sum over a token's routes of weight * y[slot]
//   moe_route_dots(a, b, slots) -> (tokens, k) fp32: <a[token], b[slot]> per route
// Each is the others' gradient (deepspeed_ext/ops/moe/dispatch.py), so the expert buffer is
// never a (tokens, experts, capacity) one-hot product.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "moe_checks.h"
#include "simd_level_check.h"

namespace ds::moe {
namespace {

constexpr int64_t kGrainElements = 1 << 14;  // per thread task: below this, threading costs more than it saves

int64_t grain(int64_t hidden) { return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, hidden)); }

// Every slot's route (token * k + route) or -1, checking slots are in range and taken once.
std::vector<int64_t> slot_sources(const Routing& r, int64_t tokens, int64_t num_slots) {
  std::vector<int64_t> source(num_slots, -1);
  for (int64_t route = 0; route < tokens * r.routes; ++route) {
    const int64_t slot = r.slots[route];
    if (slot < 0) continue;
    if (slot >= num_slots) bad_slot("moe_dispatch", route, r.routes, slot, num_slots, false);
    if (source[slot] >= 0) bad_slot("moe_dispatch", route, r.routes, slot, num_slots, true);
    source[slot] = route;
  }
  return source;
}

void check_slots_below(const char* op, const Routing& r, int64_t tokens, int64_t num_slots) {
  for (int64_t route = 0; route < tokens * r.routes; ++route) {
    if (r.slots[route] >= num_slots) bad_slot(op, route, r.routes, r.slots[route], num_slots, false);
  }
}

#if DS_SIMD_X86
#define DS_MOE_LEVELS(kernel, ...)                                              \
  if (level == SimdLevel::avx512) return avx512::kernel(__VA_ARGS__);           \
  if (level == SimdLevel::avx2) return avx2::kernel(__VA_ARGS__);
#else
#define DS_MOE_LEVELS(kernel, ...)
#endif
#define DS_MOE_RUN(rows, hidden, kernel, ...)                                   \
  const SimdLevel level = checked_simd_level();                                 \
  at::parallel_for(0, rows, grain(hidden), [&](int64_t first, int64_t last) {   \
    DS_MOE_LEVELS(kernel, __VA_ARGS__, first, last)                             \
    scalar::kernel(__VA_ARGS__, first, last);                                   \
  });

at::Tensor dispatch_cpu(const at::Tensor& x, const at::Tensor& slots, int64_t num_slots,
                        const std::optional<at::Tensor>& weights) {
  check_rows("moe_dispatch", "x", x);
  TORCH_CHECK(num_slots >= 0, "moe_dispatch: num_slots must be >= 0, got ", num_slots);
  const Routing r = check_routing("moe_dispatch", x, slots, weights, x.size(0));
  const std::vector<int64_t> source = slot_sources(r, x.size(0), num_slots);
  at::Tensor out = at::empty({num_slots, x.size(1)}, x.options());
  const void* x_data = x.data_ptr();
  void* out_data = out.data_ptr();
  DS_MOE_RUN(num_slots, r.hidden, dispatch_rows, r, x_data, source.data(), out_data)
  return out;
}

at::Tensor combine_cpu(const at::Tensor& y, const at::Tensor& slots, const std::optional<at::Tensor>& weights) {
  check_rows("moe_combine", "y", y);
  const Routing r = check_routing("moe_combine", y, slots, weights, slots.size(0));
  check_slots_below("moe_combine", r, slots.size(0), y.size(0));
  at::Tensor out = at::empty({slots.size(0), y.size(1)}, y.options());
  const void* y_data = y.data_ptr();
  void* out_data = out.data_ptr();
  DS_MOE_RUN(slots.size(0), r.hidden, combine_rows, r, y_data, out_data)
  return out;
}

at::Tensor route_dots_cpu(const at::Tensor& a, const at::Tensor& b, const at::Tensor& slots) {
  check_rows("moe_route_dots", "a", a);
  check_rows("moe_route_dots", "b", b);
  check_same_rows("moe_route_dots", a, "a", b, "b");
  const Routing r = check_routing("moe_route_dots", a, slots, std::nullopt, a.size(0));
  check_slots_below("moe_route_dots", r, a.size(0), b.size(0));
  at::Tensor dots = at::empty(slots.sizes(), a.options().dtype(at::kFloat));
  const void* a_data = a.data_ptr();
  const void* b_data = b.data_ptr();
  float* dots_data = dots.data_ptr<float>();
  DS_MOE_RUN(a.size(0), r.hidden * r.routes, route_dots, r, a_data, b_data, dots_data)
  return dots;
}

#undef DS_MOE_RUN
#undef DS_MOE_LEVELS

std::string moe_simd_level() { return simd_level_name(checked_simd_level()); }

}  // namespace

TORCH_LIBRARY_FRAGMENT(deepspeed_ext, m) {
  m.def("moe_dispatch(Tensor x, Tensor slots, int num_slots, Tensor? weights) -> Tensor");
  m.def("moe_combine(Tensor y, Tensor slots, Tensor? weights) -> Tensor");
  m.def("moe_route_dots(Tensor a, Tensor b, Tensor slots) -> Tensor");
  m.def("moe_simd_level() -> str", &moe_simd_level);
}

TORCH_LIBRARY_IMPL(deepspeed_ext, CPU, m) {
  m.impl("moe_dispatch", &dispatch_cpu);
  m.impl("moe_combine", &combine_cpu);
  m.impl("moe_route_dots", &route_dots_cpu);
}

}  // namespace ds::moe
