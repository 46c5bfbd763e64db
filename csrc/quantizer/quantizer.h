#pragma once
// The quantizer's CPU kernels: the same kernel compiled per SIMD level (quantizer_<level>.cpp),
// each working on a range of groups so the dispatcher can split groups across threads.
#include <cstdint>

namespace ds::quantizer {

enum class DType : int { f32, bf16, f16 };

struct QuantizeJob {
  const void* input;
  DType dtype;
  int64_t group_size;
  int bits;  // 8 or 4
  bool symmetric;
  bool stochastic;
  uint32_t key;      // from the seed; see stochastic_key()
  uint8_t* packed;   // group_size bytes a group (8-bit) or group_size / 2 (4-bit)
  float* scales;     // one per group
  float* offsets;    // one per group
};

struct DequantizeJob {
  const uint8_t* packed;
  const float* scales;
  const float* offsets;
  int64_t group_size;
  int bits;
  bool symmetric;
  void* output;
  DType dtype;
};

// Quantize groups [first, last); returns the index of a group holding inf or NaN (its
// output is unspecified), or -1.
#define DS_QUANTIZER_KERNELS(level)                                                       \
  namespace level {                                                                       \
  int64_t quantize_groups(const QuantizeJob& job, int64_t first, int64_t last);          \
  void dequantize_groups(const DequantizeJob& job, int64_t first, int64_t last);         \
  }
DS_QUANTIZER_KERNELS(scalar)
DS_QUANTIZER_KERNELS(avx2)
DS_QUANTIZER_KERNELS(avx512)
#undef DS_QUANTIZER_KERNELS

}  // namespace ds::quantizer
