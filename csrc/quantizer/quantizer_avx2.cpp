// The quantizer kernels at SIMD level 'avx2'; see quantizer_kernels.inc and csrc/include/simd.h.
#include "simd.h"
#include "quantizer.h"

#if DS_SIMD_X86
DS_TARGET_BEGIN_AVX2
namespace ds::quantizer::avx2 {
#include "simd_avx2.h"
#include "quantize_math.h"
#include "quantize_lanes_sse.h"
#include "quantize_lanes_avx2.h"
#include "quantizer_kernels.inc"
}  // namespace ds::quantizer::avx2
DS_TARGET_END
#endif
