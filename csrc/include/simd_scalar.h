// One fp32 lane: the portable path, and the reference every SIMD path must match.
// Included inside a level namespace after simd.h; see simd.h.
#include "float_convert.h"

struct VecF {
  static constexpr int kWidth = 1;
  float v;
  VecF() = default;
  explicit VecF(float x) : v(x) {}
  static VecF load(const float* p) { return VecF(*p); }
  void store(float* p) const { *p = v; }
};

inline VecF operator+(VecF a, VecF b) { return VecF(a.v + b.v); }
inline VecF operator-(VecF a, VecF b) { return VecF(a.v - b.v); }
inline VecF operator*(VecF a, VecF b) { return VecF(a.v * b.v); }
inline VecF operator/(VecF a, VecF b) { return VecF(a.v / b.v); }
inline VecF ds_sqrt(VecF a) { return VecF(__builtin_sqrtf(a.v)); }
inline VecF ds_max(VecF a, VecF b) { return VecF(a.v > b.v ? a.v : b.v); }
inline VecF ds_min(VecF a, VecF b) { return VecF(a.v < b.v ? a.v : b.v); }
inline VecF ds_abs(VecF a) { return VecF(__builtin_fabsf(a.v)); }
inline VecF ds_sign(VecF a) { return VecF(float(a.v > 0.0f) - float(a.v < 0.0f)); }

inline VecF load_bf16(const uint16_t* p) { return VecF(bf16_to_float(*p)); }
inline void store_bf16(uint16_t* p, VecF a) { *p = float_to_bf16(a.v); }
inline void store_bf16_pair(uint16_t* p, VecF a, VecF b) {
  store_bf16(p, a);
  store_bf16(p + VecF::kWidth, b);
}

inline void store_number_bf16_pair(uint16_t* p, VecF a, VecF b) { store_bf16_pair(p, a, b); }  // NaN costs nothing here

inline VecF load_fp16(const uint16_t* p) { return VecF(fp16_to_float(*p)); }
inline void store_fp16(uint16_t* p, VecF a) { *p = float_to_fp16(a.v); }
