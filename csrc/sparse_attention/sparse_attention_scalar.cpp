// The sparse softmax kernels at SIMD level 'scalar'; see sparse_attention_kernels.inc and csrc/include/simd.h.

#include "simd.h"
#include "sparse_attention.h"

namespace ds::sparse_attention::scalar {
#include "sparse_attention_kernels.inc"
}  // namespace ds::sparse_attention::scalar
