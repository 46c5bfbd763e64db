// The quantizer kernels at SIMD level 'scalar'; see quantizer_kernels.inc and csrc/include/simd.h.
#include "simd.h"
#include "quantizer.h"

namespace ds::quantizer::scalar {
#include "simd_scalar.h"
#include "quantize_math.h"
#include "quantize_lanes_scalar.h"
#include "quantizer_kernels.inc"
}  // namespace ds::quantizer::scalar
