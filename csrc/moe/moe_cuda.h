#pragma once
// What the torch-facing CUDA impl (moe_cuda.cpp) hands the kernels (moe.cu): the CPU
// kernels' Routing, so the .cu file needs no torch headers. `bad` points at a device word
// initialised to UINT64_MAX that receives the lowest flat route index with a bad slot.
#include <cuda_runtime_api.h>

#include "moe.h"

namespace ds::moe {

// source[slot] = the route given the slot (source starts all -1); out-of-range slots go to
// *bad_range, slots given twice to *bad_duplicate.
cudaError_t launch_slot_sources(const Routing& r, int64_t tokens, int64_t num_slots, int64_t* source,
                                unsigned long long* bad_range, unsigned long long* bad_duplicate, cudaStream_t stream);

cudaError_t launch_dispatch(const Routing& r, const void* x, const int64_t* source, void* out, int64_t num_slots,
                            cudaStream_t stream);

cudaError_t launch_combine(const Routing& r, const void* y, int64_t num_slots, void* out, int64_t tokens,
                           unsigned long long* bad, cudaStream_t stream);

cudaError_t launch_route_dots(const Routing& r, const void* a, const void* b, int64_t num_slots, float* dots,
                              int64_t tokens, unsigned long long* bad, cudaStream_t stream);

}  // namespace ds::moe
