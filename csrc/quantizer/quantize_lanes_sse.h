// Lane helpers on 16-byte registers, shared by the AVX2 and AVX-512 levels: nibble packing
// (element 2i goes in the low nibble of byte i, as quantize_math.h's pack_nibbles) and the
// last steps of the 16-bit magnitude scan.

// 16 bytes holding levels as bytes -> 8 bytes of nibble pairs, each in the low byte of a
// 16-bit lane (ready for _mm_packus_epi16).
inline __m128i nibble_pairs(__m128i level_bytes) {
  const __m128i low = _mm_and_si128(level_bytes, _mm_set1_epi16(0x000F));
  const __m128i high = _mm_and_si128(_mm_srli_epi16(level_bytes, 4), _mm_set1_epi16(0x00F0));
  return _mm_or_si128(low, high);
}

// The low 8 bytes -> their 16 nibbles as bytes in element order, sign-extended from 4 bits
// when the levels are signed.
inline __m128i nibbles_of_low_half(__m128i packed, bool is_signed) {
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i nibbles = _mm_unpacklo_epi8(_mm_and_si128(packed, mask), _mm_and_si128(_mm_srli_epi16(packed, 4), mask));
  if (!is_signed) return nibbles;
  const __m128i eight = _mm_set1_epi8(8);
  return _mm_sub_epi8(_mm_xor_si128(nibbles, eight), eight);
}

// The largest of eight 16-bit lanes: minpos finds the smallest, so ask it of the complements.
inline uint16_t max_u16(__m128i lanes) {
  const __m128i ones = _mm_set1_epi16(-1);
  return uint16_t(~_mm_cvtsi128_si32(_mm_minpos_epu16(_mm_xor_si128(lanes, ones))));
}
