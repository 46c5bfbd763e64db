// The MoE kernels at SIMD level 'avx512'; see moe_kernels.inc and csrc/include/simd.h.
#include "simd.h"
#include "moe.h"

#if DS_SIMD_X86
DS_TARGET_BEGIN_AVX512
namespace ds::moe::avx512 {
#include "simd_avx512.h"
#include "moe_math.h"
#include "moe_kernels.inc"
}  // namespace ds::moe::avx512
DS_TARGET_END
#endif
