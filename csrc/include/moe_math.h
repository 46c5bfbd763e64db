#pragma once
// Per-element math of the MoE dispatch / combine op, shared by the CPU kernels (every SIMD
// level) and the CUDA kernels, so the CPU tests exercise the arithmetic the GPU runs.
// Needs <cstdint> included first.
#include "ds_inline.h"

// A route the gate dropped (over capacity) has slot -1.
DS_INLINE bool moe_routed(int64_t slot) { return slot >= 0; }

// One gate-weighted expert value added to a token's fp32 sum: the product rounded, then the
// sum (never fused: builds use -ffp-contract=off and --fmad=false), routes in order 0..k-1.
DS_INLINE float moe_weighted_add(float sum, float weight, float value) { return sum + weight * value; }

// Dot products (the gate weights' gradients) accumulate element i into lane i % 16, each lane
// in element order, then fold the lanes in this fixed tree: one order on every SIMD width
// (scalar, AVX2's two vectors, AVX-512's one) and on CUDA (16 threads a route).
constexpr int kMoeDotLanes = 16;

DS_INLINE float moe_fold_lanes(float* lanes) {
  for (int width = kMoeDotLanes / 2; width > 0; width /= 2) {
    for (int lane = 0; lane < width; ++lane) lanes[lane] = lanes[lane] + lanes[lane + width];
  }
  return lanes[0];
}
