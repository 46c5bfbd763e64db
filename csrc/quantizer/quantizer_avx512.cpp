// The quantizer kernels at SIMD level 'avx512'; see quantizer_kernels.inc and csrc/include/simd.h.
#include "simd.h"
#include "quantizer.h"

#if DS_SIMD_X86
DS_TARGET_BEGIN_AVX512
namespace ds::quantizer::avx512 {
#include "simd_avx512.h"
#include "quantize_math.h"
#include "quantize_lanes_sse.h"
#include "quantize_lanes_avx512.h"
#include "quantizer_kernels.inc"
}  // namespace ds::quantizer::avx512
DS_TARGET_END
#endif
