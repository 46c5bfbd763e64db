// Sixteen fp32 lanes of AVX-512 (F, BW, DQ, VL). Included inside the avx512
// namespace and target region; see simd.h.
#include "float_convert.h"

struct VecF {
  static constexpr int kWidth = 16;
  __m512 v;
  VecF() = default;
  explicit VecF(__m512 x) : v(x) {}
  explicit VecF(float x) : v(_mm512_set1_ps(x)) {}
  static VecF load(const float* p) { return VecF(_mm512_loadu_ps(p)); }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
};

inline VecF operator+(VecF a, VecF b) { return VecF(_mm512_add_ps(a.v, b.v)); }
inline VecF operator-(VecF a, VecF b) { return VecF(_mm512_sub_ps(a.v, b.v)); }
inline VecF operator*(VecF a, VecF b) { return VecF(_mm512_mul_ps(a.v, b.v)); }
inline VecF operator/(VecF a, VecF b) { return VecF(_mm512_div_ps(a.v, b.v)); }
inline VecF ds_sqrt(VecF a) { return VecF(_mm512_sqrt_ps(a.v)); }
inline VecF ds_max(VecF a, VecF b) { return VecF(_mm512_max_ps(a.v, b.v)); }
inline VecF ds_min(VecF a, VecF b) { return VecF(_mm512_min_ps(a.v, b.v)); }
inline VecF ds_abs(VecF a) { return VecF(_mm512_abs_ps(a.v)); }
inline VecF ds_sign(VecF a) {
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
  const __m512 positive = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a.v, zero, _CMP_GT_OQ), one);
  const __m512 negative = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a.v, zero, _CMP_LT_OQ), one);
  return VecF(_mm512_sub_ps(positive, negative));
}

inline VecF load_bf16(const uint16_t* p) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return VecF(_mm512_castsi512_ps(_mm512_slli_epi32(wide, 16)));
}

inline void store_bf16(uint16_t* p, VecF a) {
  const __m512i bits = _mm512_castps_si512(a.v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __mmask16 is_nan = _mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q);
  rounded = _mm512_mask_mov_epi32(rounded, is_nan, _mm512_set1_epi32(0x7fc0));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(rounded));
}

inline void store_bf16_pair(uint16_t* p, VecF a, VecF b) {
  store_bf16(p, a);
  store_bf16(p + VecF::kWidth, b);
}

inline void store_number_bf16_pair(uint16_t* p, VecF a, VecF b) { store_bf16_pair(p, a, b); }  // NaN costs nothing here

inline VecF load_fp16(const uint16_t* p) {
  return VecF(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
}

inline void store_fp16(uint16_t* p, VecF a) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
