// What the quantizer needs beyond VecF at AVX-512: per-lane rounding and random numbers,
// and levels to and from packed bytes. Included after simd_avx512.h and quantize_math.h in
// the avx512 namespace; quantizer_kernels.inc documents the interface.

inline VecF ds_rint(VecF a) { return VecF(_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)); }
inline VecF ds_floor(VecF a) { return VecF(_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)); }

inline VecF uniform_lanes(uint32_t key, uint32_t first_index) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i x = _mm512_xor_si512(_mm512_add_epi32(_mm512_set1_epi32(int(first_index)), lane), _mm512_set1_epi32(int(key)));
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32(int(kMixMultiply1)));
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32(int(kMixMultiply2)));
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
  return VecF(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(x, 8)), _mm512_set1_ps(1.0f / 16777216.0f)));
}

// The low byte of each clamped level, rounded to nearest even by the conversion: two's
// complement for signed levels.
inline __m128i low_bytes(VecF levels) { return _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(levels.v)); }

inline VecF lanes_of_bytes(__m128i bytes, bool is_signed) {
  return VecF(_mm512_cvtepi32_ps(is_signed ? _mm512_cvtepi8_epi32(bytes) : _mm512_cvtepu8_epi32(bytes)));
}

inline void store_level_bytes(uint8_t* out, VecF first, VecF second) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), low_bytes(first));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16), low_bytes(second));
}

inline void store_level_nibbles(uint8_t* out, VecF first, VecF second) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                   _mm_packus_epi16(nibble_pairs(low_bytes(first)), nibble_pairs(low_bytes(second))));
}

inline void load_level_bytes(const uint8_t* in, bool is_signed, VecF& first, VecF& second) {
  first = lanes_of_bytes(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in)), is_signed);
  second = lanes_of_bytes(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 16)), is_signed);
}

inline void load_level_nibbles(const uint8_t* in, bool is_signed, VecF& first, VecF& second) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in));
  first = lanes_of_bytes(nibbles_of_low_half(bytes, is_signed), is_signed);
  second = lanes_of_bytes(nibbles_of_low_half(_mm_unpackhi_epi64(bytes, bytes), is_signed), is_signed);
}

// max(hi, |v|) on bit patterns; see max_magnitude(float, float) in quantizer_kernels.inc.
inline VecF max_magnitude(VecF hi, VecF v) {
  return VecF(_mm512_castsi512_ps(_mm512_max_epi32(_mm512_castps_si512(hi.v), _mm512_castps_si512(ds_abs(v).v))));
}

// The largest lane of max_magnitude's bit-pattern order (a NaN lane wins).
inline float reduce_max_magnitude(VecF hi) {
  const int bits = _mm512_reduce_max_epi32(_mm512_castps_si512(hi.v));
  float value;
  __builtin_memcpy(&value, &bits, 4);
  return value;
}

inline uint16_t max_magnitude_bits(const uint16_t* x, int64_t n) {
  const __m512i magnitude = _mm512_set1_epi16(0x7fff);
  __m512i a = _mm512_setzero_si512();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    a = _mm512_max_epu16(a, _mm512_and_si512(_mm512_loadu_si512(x + i), magnitude));
  const __m256i half = _mm256_max_epu16(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64(a, 1));
  const uint16_t hi = max_u16(_mm_max_epu16(_mm256_castsi256_si128(half), _mm256_extracti128_si256(half, 1)));
  return max_magnitude_bits_from(x, i, n, hi);
}
