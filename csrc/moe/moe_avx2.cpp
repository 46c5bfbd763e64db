// The MoE kernels at SIMD level 'avx2'; see moe_kernels.inc and csrc/include/simd.h.
#include "simd.h"
#include "moe.h"

#if DS_SIMD_X86
DS_TARGET_BEGIN_AVX2
namespace ds::moe::avx2 {
#include "simd_avx2.h"
#include "moe_math.h"
#include "moe_kernels.inc"
}  // namespace ds::moe::avx2
DS_TARGET_END
#endif
