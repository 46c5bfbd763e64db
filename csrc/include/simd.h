#pragma once
// SIMD levels and run-time dispatch for CPU kernels.
//
// One library carries every level: a kernel source is compiled once per level in
// its own namespace (ds::<op>::scalar / avx2 / avx512) inside a
// `#pragma GCC target` region, and the op picks a namespace per call with
// active_simd_level(). A prebuilt wheel therefore runs on any x86-64, and
// DS_SIMD=scalar|avx2|avx512 forces a lower level so tests reach every path on one
// machine. Compile flags carry no -march: the target regions are the only place an
// instruction set is named.
//
// Files included inside a level's namespace (simd_<level>.h, the *_math.h headers)
// must include no library headers themselves; this header pulls them in up front.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#define DS_SIMD_X86 1
#include <immintrin.h>
#else
#define DS_SIMD_X86 0
#endif

// Everything between DS_TARGET_BEGIN_<LEVEL> and DS_TARGET_END is compiled for that level.
#define DS_PRAGMA(text) _Pragma(#text)
#define DS_TARGET_BEGIN(isa) _Pragma("GCC push_options") DS_PRAGMA(GCC target(isa))
#define DS_TARGET_BEGIN_AVX2 DS_TARGET_BEGIN("avx2,fma,f16c")
#define DS_TARGET_BEGIN_AVX512 DS_TARGET_BEGIN("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")
#define DS_TARGET_END _Pragma("GCC pop_options")

namespace ds {

enum class SimdLevel : int { scalar = 0, avx2 = 1, avx512 = 2 };

inline const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::avx512: return "avx512";
    case SimdLevel::avx2: return "avx2";
    default: return "scalar";
  }
}

inline SimdLevel cpu_simd_support() {
#if DS_SIMD_X86
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return SimdLevel::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    return SimdLevel::avx2;
#endif
  return SimdLevel::scalar;
}

// The level kernels run at: what the CPU supports, lowered by DS_SIMD if set. Read on
// every call (a getenv costs nanoseconds) so a test can switch levels in-process.
// Returns false when DS_SIMD holds an unknown value.
inline bool active_simd_level(SimdLevel* level) {
  static const SimdLevel supported = cpu_simd_support();
  *level = supported;
  const char* forced = std::getenv("DS_SIMD");
  if (forced == nullptr || *forced == '\0') return true;
  SimdLevel wanted;
  if (std::strcmp(forced, "scalar") == 0) wanted = SimdLevel::scalar;
  else if (std::strcmp(forced, "avx2") == 0) wanted = SimdLevel::avx2;
  else if (std::strcmp(forced, "avx512") == 0) wanted = SimdLevel::avx512;
  else return false;
  if (static_cast<int>(wanted) < static_cast<int>(supported)) *level = wanted;
  return true;
}

}  // namespace ds
