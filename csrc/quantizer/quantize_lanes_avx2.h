// What the quantizer needs beyond VecF at AVX2: per-lane rounding and random numbers, and
// levels to and from packed bytes. Included after simd_avx2.h, quantize_math.h and
// quantize_lanes_sse.h in the avx2 namespace; quantizer_kernels.inc documents the interface.

inline VecF ds_rint(VecF a) { return VecF(_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)); }
inline VecF ds_floor(VecF a) { return VecF(_mm256_round_ps(a.v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)); }

inline VecF uniform_lanes(uint32_t key, uint32_t first_index) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i x = _mm256_xor_si256(_mm256_add_epi32(_mm256_set1_epi32(int(first_index)), lane), _mm256_set1_epi32(int(key)));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(int(kMixMultiply1)));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(int(kMixMultiply2)));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  return VecF(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(x, 8)), _mm256_set1_ps(1.0f / 16777216.0f)));
}

// The low byte of each of 16 clamped levels, rounded to nearest even by the conversion:
// two's complement for signed ones.
inline __m128i low_bytes(VecF first, VecF second) {
  // Per 128-bit lane, byte 0 of each int32 goes to bytes 0-3 (first) or 4-7 (second); the
  // other shuffle indices are negative, which zeroes the byte.
  const __m256i pick_first = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                               0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i pick_second = _mm256_setr_epi8(-1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1,
                                                -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i both = _mm256_or_si256(_mm256_shuffle_epi8(_mm256_cvtps_epi32(first.v), pick_first),
                                       _mm256_shuffle_epi8(_mm256_cvtps_epi32(second.v), pick_second));
  // dwords now: first 0-3, second 0-3, -, -, first 4-7, second 4-7, -, -.
  return _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(both, _mm256_setr_epi32(0, 4, 1, 5, 2, 3, 6, 7)));
}

// 16 bytes -> two VecF of 8 lanes.
inline void lanes_of_bytes(__m128i bytes, bool is_signed, VecF& first, VecF& second) {
  const __m128i upper = _mm_unpackhi_epi64(bytes, bytes);
  first = VecF(_mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(bytes) : _mm256_cvtepu8_epi32(bytes)));
  second = VecF(_mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(upper) : _mm256_cvtepu8_epi32(upper)));
}

inline void store_level_bytes(uint8_t* out, VecF first, VecF second) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), low_bytes(first, second));
}

inline void store_level_nibbles(uint8_t* out, VecF first, VecF second) {
  const __m128i pairs = nibble_pairs(low_bytes(first, second));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packus_epi16(pairs, pairs));
}

inline void load_level_bytes(const uint8_t* in, bool is_signed, VecF& first, VecF& second) {
  lanes_of_bytes(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in)), is_signed, first, second);
}

inline void load_level_nibbles(const uint8_t* in, bool is_signed, VecF& first, VecF& second) {
  const __m128i packed = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in));
  lanes_of_bytes(nibbles_of_low_half(packed, is_signed), is_signed, first, second);
}

// max(hi, |v|) on bit patterns; see max_magnitude(float, float) in quantizer_kernels.inc.
inline VecF max_magnitude(VecF hi, VecF v) {
  return VecF(_mm256_castsi256_ps(_mm256_max_epi32(_mm256_castps_si256(hi.v), _mm256_castps_si256(ds_abs(v).v))));
}

// The largest lane of max_magnitude's bit-pattern order (a NaN lane wins).
inline float reduce_max_magnitude(VecF hi) {
  __m256i m = _mm256_castps_si256(hi.v);
  m = _mm256_max_epi32(m, _mm256_permute2x128_si256(m, m, 1));
  m = _mm256_max_epi32(m, _mm256_shuffle_epi32(m, 0x4e));
  m = _mm256_max_epi32(m, _mm256_shuffle_epi32(m, 0xb1));
  return _mm_cvtss_f32(_mm_castsi128_ps(_mm256_castsi256_si128(m)));
}

inline uint16_t max_magnitude_bits(const uint16_t* x, int64_t n) {
  const __m256i magnitude = _mm256_set1_epi16(0x7fff);
  __m256i a = _mm256_setzero_si256(), b = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a = _mm256_max_epu16(a, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)), magnitude));
    b = _mm256_max_epu16(b, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i + 16)), magnitude));
  }
  a = _mm256_max_epu16(a, b);
  const uint16_t hi = max_u16(_mm_max_epu16(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1)));
  return max_magnitude_bits_from(x, i, n, hi);
}
