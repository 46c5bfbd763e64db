// CUDA impl of the MoE ops: the CPU impl's checks, then the kernels of moe.cu on the current
// stream. A bad slot is found by the kernels and raised here, which costs one sync per call.
// Compiled only where torch has CUDA.
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>

#include "moe_checks.h"
#include "moe_cuda.h"

namespace ds::moe {
namespace {

constexpr int64_t kUnset = -1;  // UINT64_MAX as the int64 the flag tensors hold

void check_launch(cudaError_t status, const char* op) {
  TORCH_CHECK(status == cudaSuccess, op, ": kernel launch failed: ", cudaGetErrorString(status));
}

unsigned long long* flag_ptr(at::Tensor& flag) { return reinterpret_cast<unsigned long long*>(flag.data_ptr<int64_t>()); }

// Raise for the lowest bad route a kernel flagged (flags hold kUnset when there is none).
void raise_flagged(const char* op, const at::Tensor& slots, int64_t num_slots, const at::Tensor& range,
                   const at::Tensor* duplicate) {
  const int64_t bad = range.item<int64_t>();
  const int64_t routes = slots.size(1);
  if (bad != kUnset) bad_slot(op, bad, routes, slots.view(-1)[bad].item<int64_t>(), num_slots, false);
  if (duplicate == nullptr) return;
  const int64_t twice = duplicate->item<int64_t>();
  if (twice != kUnset) bad_slot(op, twice, routes, slots.view(-1)[twice].item<int64_t>(), num_slots, true);
}

at::Tensor dispatch_cuda(const at::Tensor& x, const at::Tensor& slots, int64_t num_slots,
                         const std::optional<at::Tensor>& weights) {
  check_rows("moe_dispatch", "x", x);
  TORCH_CHECK(num_slots >= 0 && num_slots <= std::numeric_limits<int32_t>::max(),
              "moe_dispatch: num_slots must be in [0, 2^31) on CUDA, got ", num_slots);
  const Routing r = check_routing("moe_dispatch", x, slots, weights, x.size(0));
  const c10::cuda::CUDAGuard guard(x.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor source = at::full({num_slots}, -1, slots.options());
  at::Tensor range = at::full({1}, kUnset, slots.options()), twice = at::full({1}, kUnset, slots.options());
  check_launch(launch_slot_sources(r, x.size(0), num_slots, source.data_ptr<int64_t>(), flag_ptr(range),
                                   flag_ptr(twice), stream), "moe_dispatch");
  raise_flagged("moe_dispatch", slots, num_slots, range, &twice);
  at::Tensor out = at::empty({num_slots, x.size(1)}, x.options());
  check_launch(launch_dispatch(r, x.data_ptr(), source.data_ptr<int64_t>(), out.data_ptr(), num_slots, stream),
               "moe_dispatch");
  return out;
}

at::Tensor combine_cuda(const at::Tensor& y, const at::Tensor& slots, const std::optional<at::Tensor>& weights) {
  check_rows("moe_combine", "y", y);
  const Routing r = check_routing("moe_combine", y, slots, weights, slots.size(0));
  TORCH_CHECK(slots.size(0) <= std::numeric_limits<int32_t>::max(), "moe_combine: at most 2^31 - 1 tokens on CUDA");
  const c10::cuda::CUDAGuard guard(y.device());
  at::Tensor range = at::full({1}, kUnset, slots.options());
  at::Tensor out = at::empty({slots.size(0), y.size(1)}, y.options());
  check_launch(launch_combine(r, y.data_ptr(), y.size(0), out.data_ptr(), slots.size(0), flag_ptr(range),
                              c10::cuda::getCurrentCUDAStream()), "moe_combine");
  raise_flagged("moe_combine", slots, y.size(0), range, nullptr);
  return out;
}

at::Tensor route_dots_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& slots) {
  check_rows("moe_route_dots", "a", a);
  check_rows("moe_route_dots", "b", b);
  check_same_rows("moe_route_dots", a, "a", b, "b");
  const Routing r = check_routing("moe_route_dots", a, slots, std::nullopt, a.size(0));
  const c10::cuda::CUDAGuard guard(a.device());
  at::Tensor range = at::full({1}, kUnset, slots.options());
  at::Tensor dots = at::empty(slots.sizes(), a.options().dtype(at::kFloat));
  check_launch(launch_route_dots(r, a.data_ptr(), b.data_ptr(), b.size(0), dots.data_ptr<float>(), a.size(0),
                                 flag_ptr(range), c10::cuda::getCurrentCUDAStream()), "moe_route_dots");
  raise_flagged("moe_route_dots", slots, b.size(0), range, nullptr);
  return dots;
}

}  // namespace

TORCH_LIBRARY_IMPL(deepspeed_ext, CUDA, m) {
  m.impl("moe_dispatch", &dispatch_cuda);
  m.impl("moe_combine", &combine_cuda);
  m.impl("moe_route_dots", &route_dots_cuda);
}

}  // namespace ds::moe
