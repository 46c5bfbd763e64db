// The sparse softmax kernels at SIMD level 'avx2'; see sparse_attention_kernels.inc and csrc/include/simd.h.

#include "simd.h"
#include "sparse_attention.h"

#if DS_SIMD_X86
DS_TARGET_BEGIN_AVX2
namespace ds::sparse_attention::avx2 {
#include "sparse_attention_kernels.inc"
}  // namespace ds::sparse_attention::avx2
DS_TARGET_END
#endif
