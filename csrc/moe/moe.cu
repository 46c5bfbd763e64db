// CUDA kernels of the MoE op: a block a row (slot or token), threads across the hidden size,
// every element through the moe_math.h functions the CPU kernels run; route dots use 16
// threads a route, one a lane, so they fold in the CPU's order.
#include <cstdint>

#include "float_convert.h"
#include "moe_cuda.h"
#include "moe_math.h"

namespace ds::moe {
namespace {

constexpr int kThreads = 256;
constexpr int kRoutesPerDotBlock = 8;

template <DType D>
struct Element {
  using T = uint16_t;
  __device__ static float load(const T* p) { return D == DType::bf16 ? bf16_to_float(*p) : fp16_to_float(*p); }
  __device__ static T of(float value) { return D == DType::bf16 ? float_to_bf16(value) : float_to_fp16(value); }
};

template <>
struct Element<DType::f32> {
  using T = float;
  __device__ static float load(const T* p) { return *p; }
  __device__ static T of(float value) { return value; }
};

__global__ void slot_sources_kernel(Routing r, int64_t routes, int64_t num_slots, unsigned long long* source,
                                    unsigned long long* bad_range, unsigned long long* bad_duplicate) {
  const int64_t route = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (route >= routes) return;
  const int64_t slot = r.slots[route];
  if (!moe_routed(slot)) return;
  if (slot >= num_slots) {
    atomicMin(bad_range, static_cast<unsigned long long>(route));
    return;
  }
  const unsigned long long unset = ~0ull;
  if (atomicCAS(source + slot, unset, static_cast<unsigned long long>(route)) != unset) {
    atomicMin(bad_duplicate, static_cast<unsigned long long>(route));
  }
}

template <DType D>
__global__ void dispatch_kernel(Routing r, const void* x_data, const int64_t* source, void* out_data) {
  using E = Element<D>;
  const auto* x = static_cast<const typename E::T*>(x_data);
  auto* row = static_cast<typename E::T*>(out_data) + blockIdx.x * r.hidden;
  const int64_t route = source[blockIdx.x];
  const typename E::T* token = route >= 0 ? x + (route / r.routes) * r.hidden : nullptr;
  const float weight = route >= 0 && r.weights != nullptr ? r.weights[route] : 1.0f;
  for (int64_t i = threadIdx.x; i < r.hidden; i += blockDim.x) {
    if (token == nullptr) row[i] = E::of(0.0f);
    else row[i] = r.weights != nullptr ? E::of(weight * E::load(token + i)) : token[i];
  }
}

template <DType D>
__global__ void combine_kernel(Routing r, const void* y_data, int64_t num_slots, void* out_data,
                               unsigned long long* bad) {
  using E = Element<D>;
  const auto* y = static_cast<const typename E::T*>(y_data);
  const int64_t* slots = r.slots + blockIdx.x * r.routes;
  auto* row = static_cast<typename E::T*>(out_data) + blockIdx.x * r.hidden;
  for (int64_t route = 0; route < r.routes; ++route) {
    if (slots[route] >= num_slots && threadIdx.x == 0) atomicMin(bad, blockIdx.x * r.routes + route);
  }
  for (int64_t i = threadIdx.x; i < r.hidden; i += blockDim.x) {
    float sum = 0.0f;
    for (int64_t route = 0; route < r.routes; ++route) {
      const int64_t slot = slots[route];
      if (!moe_routed(slot) || slot >= num_slots) continue;
      const float weight = r.weights != nullptr ? r.weights[blockIdx.x * r.routes + route] : 1.0f;
      sum = moe_weighted_add(sum, weight, E::load(y + slot * r.hidden + i));
    }
    row[i] = E::of(sum);
  }
}

template <DType D>
__global__ void route_dots_kernel(Routing r, const void* a_data, const void* b_data, int64_t num_slots,
                                  int64_t routes, float* dots, unsigned long long* bad) {
  using E = Element<D>;
  __shared__ float lanes[kRoutesPerDotBlock][kMoeDotLanes];
  const int group = threadIdx.x / kMoeDotLanes, lane = threadIdx.x % kMoeDotLanes;
  const int64_t route = blockIdx.x * int64_t(kRoutesPerDotBlock) + group;
  const int64_t slot = route < routes ? r.slots[route] : -1;
  const bool valid = moe_routed(slot) && slot < num_slots;
  float sum = 0.0f;
  if (valid) {
    const auto* a = static_cast<const typename E::T*>(a_data) + (route / r.routes) * r.hidden;
    const auto* b = static_cast<const typename E::T*>(b_data) + slot * r.hidden;
    for (int64_t i = lane; i < r.hidden; i += kMoeDotLanes) sum = moe_weighted_add(sum, E::load(a + i), E::load(b + i));
  }
  lanes[group][lane] = sum;
  __syncthreads();
  if (lane != 0 || route >= routes) return;
  if (slot >= num_slots) atomicMin(bad, static_cast<unsigned long long>(route));
  dots[route] = valid ? moe_fold_lanes(lanes[group]) : 0.0f;
}

unsigned int blocks(int64_t items, int64_t per_block) { return static_cast<unsigned int>((items + per_block - 1) / per_block); }

}  // namespace

#define DS_MOE_LAUNCH(kernel, grid, block, ...)                                                  \
  switch (r.dtype) {                                                                             \
    case DType::f32: kernel<DType::f32><<<grid, block, 0, stream>>>(__VA_ARGS__); break;         \
    case DType::bf16: kernel<DType::bf16><<<grid, block, 0, stream>>>(__VA_ARGS__); break;       \
    case DType::f16: kernel<DType::f16><<<grid, block, 0, stream>>>(__VA_ARGS__); break;         \
  }                                                                                              \
  return cudaGetLastError();

cudaError_t launch_slot_sources(const Routing& r, int64_t tokens, int64_t num_slots, int64_t* source,
                                unsigned long long* bad_range, unsigned long long* bad_duplicate,
                                cudaStream_t stream) {
  const int64_t routes = tokens * r.routes;
  if (routes == 0) return cudaSuccess;
  slot_sources_kernel<<<blocks(routes, kThreads), kThreads, 0, stream>>>(
      r, routes, num_slots, reinterpret_cast<unsigned long long*>(source), bad_range, bad_duplicate);
  return cudaGetLastError();
}

cudaError_t launch_dispatch(const Routing& r, const void* x, const int64_t* source, void* out, int64_t num_slots,
                            cudaStream_t stream) {
  if (num_slots == 0) return cudaSuccess;
  DS_MOE_LAUNCH(dispatch_kernel, static_cast<unsigned int>(num_slots), kThreads, r, x, source, out)
}

cudaError_t launch_combine(const Routing& r, const void* y, int64_t num_slots, void* out, int64_t tokens,
                           unsigned long long* bad, cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  DS_MOE_LAUNCH(combine_kernel, static_cast<unsigned int>(tokens), kThreads, r, y, num_slots, out, bad)
}

cudaError_t launch_route_dots(const Routing& r, const void* a, const void* b, int64_t num_slots, float* dots,
                              int64_t tokens, unsigned long long* bad, cudaStream_t stream) {
  const int64_t routes = tokens * r.routes;
  if (routes == 0) return cudaSuccess;
  DS_MOE_LAUNCH(route_dots_kernel, blocks(routes, kRoutesPerDotBlock), kRoutesPerDotBlock * kMoeDotLanes, r, a, b,
                num_slots, routes, dots, bad)
}

#undef DS_MOE_LAUNCH

}  // namespace ds::moe
