#pragma once
// The SIMD level an op's CPU kernels run at, as simd.h's active_simd_level(), with an
// unknown DS_SIMD value turned into a torch error that says what to write instead.
#include <c10/util/Exception.h>

#include <cstdlib>

#include "simd.h"

namespace ds {

inline SimdLevel checked_simd_level() {
  SimdLevel level;
  TORCH_CHECK(active_simd_level(&level), "DS_SIMD='", std::getenv("DS_SIMD"),
              "' is not a SIMD level; use scalar, avx2 or avx512 (or unset it)");
  return level;
}

}  // namespace ds
