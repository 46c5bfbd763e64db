// The sparse softmax kernels at SIMD level 'avx512'; see sparse_attention_kernels.inc and csrc/include/simd.h.

#include "simd.h"
#include "sparse_attention.h"

#if DS_SIMD_X86
DS_TARGET_BEGIN_AVX512
namespace ds::sparse_attention::avx512 {
#include "sparse_attention_kernels.inc"
}  // namespace ds::sparse_attention::avx512
DS_TARGET_END
#endif
