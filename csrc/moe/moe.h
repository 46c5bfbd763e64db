#pragma once
// The MoE dispatch / combine op's CPU kernels: the same kernels compiled per SIMD level
// (moe_<level>.cpp), each over a range of rows so the dispatcher can split rows across threads.
//
// A routing is (tokens, routes) int64 slots into the (experts * capacity) expert buffer, -1 for
// a dropped route, with optional fp32 gate weights of the same shape.
#include <cstdint>

namespace ds::moe {

enum class DType : int { f32, bf16, f16 };

struct Routing {
  DType dtype;            // of the token and expert rows
  int64_t hidden;         // elements a row
  int64_t routes;         // k: slots a token
  const int64_t* slots;   // (tokens, routes)
  const float* weights;   // (tokens, routes), or null for weight 1
};

#define DS_MOE_KERNELS(level)                                                                               \
  namespace level {                                                                                         \
  /* out[slot] = weight * x[token] for slots [first, last); source[slot] = token * routes + route or -1 */ \
  void dispatch_rows(const Routing& r, const void* x, const int64_t* source, void* out, int64_t first,       \
                     int64_t last);                                                                         \
  /* out[token] = sum over routes of weight * y[slot], for tokens [first, last) */                          \
  void combine_rows(const Routing& r, const void* y, void* out, int64_t first, int64_t last);               \
  /* dots[token, route] = <a[token], b[slot]> (0 for a dropped route), for tokens [first, last) */          \
  void route_dots(const Routing& r, const void* a, const void* b, float* dots, int64_t first, int64_t last); \
  }
DS_MOE_KERNELS(scalar)
DS_MOE_KERNELS(avx2)
DS_MOE_KERNELS(avx512)
#undef DS_MOE_KERNELS

}  // namespace ds::moe
