// The MoE kernels at SIMD level 'scalar'; see moe_kernels.inc and csrc/include/simd.h.
#include "simd.h"
#include "moe.h"

namespace ds::moe::scalar {
#include "simd_scalar.h"
#include "moe_math.h"
#include "moe_kernels.inc"
}  // namespace ds::moe::scalar
