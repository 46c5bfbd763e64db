// The quantizer's lane helpers for one-lane VecF: the reference the SIMD levels must match
// byte for byte. Included after simd_scalar.h and quantize_math.h in the scalar namespace;
// quantizer_kernels.inc documents the interface.

inline VecF ds_rint(VecF a) { return VecF(ds_rint(a.v)); }
inline VecF ds_floor(VecF a) { return VecF(ds_floor(a.v)); }
inline VecF uniform_lanes(uint32_t key, uint32_t first_index) { return VecF(uniform01(key, first_index)); }

inline void store_level_bytes(uint8_t* out, VecF first, VecF second) {
  out[0] = uint8_t(int(ds_rint(first.v)));
  out[1] = uint8_t(int(ds_rint(second.v)));
}

inline void store_level_nibbles(uint8_t* out, VecF first, VecF second) {
  out[0] = pack_nibbles(int(ds_rint(first.v)), int(ds_rint(second.v)));
}

inline void load_level_bytes(const uint8_t* in, bool is_signed, VecF& first, VecF& second) {
  first = VecF(float(is_signed ? int(int8_t(in[0])) : int(in[0])));
  second = VecF(float(is_signed ? int(int8_t(in[1])) : int(in[1])));
}

inline void load_level_nibbles(const uint8_t* in, bool is_signed, VecF& first, VecF& second) {
  first = VecF(float(unpack_nibble(in[0], 0, is_signed)));
  second = VecF(float(unpack_nibble(in[0], 1, is_signed)));
}

inline VecF max_magnitude(VecF hi, VecF v) { return VecF(max_magnitude(hi.v, v.v)); }
inline float reduce_max_magnitude(VecF hi) { return hi.v; }

inline uint16_t max_magnitude_bits(const uint16_t* x, int64_t n) {
  return max_magnitude_bits_from(x, 0, n, 0);
}
