// Eight fp32 lanes of AVX2 (+FMA, F16C). Included inside the avx2 namespace and
// target region; see simd.h.
#include "float_convert.h"

struct VecF {
  static constexpr int kWidth = 8;
  __m256 v;
  VecF() = default;
  explicit VecF(__m256 x) : v(x) {}
  explicit VecF(float x) : v(_mm256_set1_ps(x)) {}
  static VecF load(const float* p) { return VecF(_mm256_loadu_ps(p)); }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
};

inline VecF operator+(VecF a, VecF b) { return VecF(_mm256_add_ps(a.v, b.v)); }
inline VecF operator-(VecF a, VecF b) { return VecF(_mm256_sub_ps(a.v, b.v)); }
inline VecF operator*(VecF a, VecF b) { return VecF(_mm256_mul_ps(a.v, b.v)); }
inline VecF operator/(VecF a, VecF b) { return VecF(_mm256_div_ps(a.v, b.v)); }
inline VecF ds_sqrt(VecF a) { return VecF(_mm256_sqrt_ps(a.v)); }
inline VecF ds_max(VecF a, VecF b) { return VecF(_mm256_max_ps(a.v, b.v)); }
inline VecF ds_min(VecF a, VecF b) { return VecF(_mm256_min_ps(a.v, b.v)); }
inline VecF ds_abs(VecF a) { return VecF(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v)); }
inline VecF ds_sign(VecF a) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  const __m256 positive = _mm256_and_ps(_mm256_cmp_ps(a.v, zero, _CMP_GT_OQ), one);
  const __m256 negative = _mm256_and_ps(_mm256_cmp_ps(a.v, zero, _CMP_LT_OQ), one);
  return VecF(_mm256_sub_ps(positive, negative));
}

inline VecF load_bf16(const uint16_t* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return VecF(_mm256_castsi256_ps(_mm256_slli_epi32(wide, 16)));
}

// bf16 bit patterns (round to nearest even) in the low half of each lane, for lanes that
// are not NaN (rounding could carry a NaN's payload into inf).
inline __m256i bf16_lanes_of_numbers(VecF a) {
  const __m256i bits = _mm256_castps_si256(a.v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  return _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
}

// The same for any lanes: a NaN becomes the quiet NaN PyTorch writes.
inline __m256i bf16_lanes(VecF a) {
  const __m256i is_nan = _mm256_castps_si256(_mm256_cmp_ps(a.v, a.v, _CMP_UNORD_Q));
  return _mm256_blendv_epi8(bf16_lanes_of_numbers(a), _mm256_set1_epi32(0x7fc0), is_nan);
}

inline void store_bf16(uint16_t* p, VecF a) {
  const __m256i rounded = bf16_lanes(a);
  // packus works per 128-bit lane: pack, then gather the two useful quarters.
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(rounded, rounded), 0xd8);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
}

// Two vectors to 16 consecutive bf16 values: one pack, one permute and one store for both.
inline void store_bf16_pair(uint16_t* p, __m256i first, __m256i second) {
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(first, second), 0xd8);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), packed);
}

inline void store_bf16_pair(uint16_t* p, VecF a, VecF b) { store_bf16_pair(p, bf16_lanes(a), bf16_lanes(b)); }

// For lanes known not to be NaN: two instructions fewer a vector.
inline void store_number_bf16_pair(uint16_t* p, VecF a, VecF b) {
  store_bf16_pair(p, bf16_lanes_of_numbers(a), bf16_lanes_of_numbers(b));
}

inline VecF load_fp16(const uint16_t* p) {
  return VecF(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

inline void store_fp16(uint16_t* p, VecF a) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
