// AVX2 build of the CPU optimizer kernels; dispatched to only where the CPU has AVX2.
#include "simd.h"
#include "cpu_adam.h"

#if DS_SIMD_X86
DS_TARGET_BEGIN_AVX2
namespace ds::cpu_optim::avx2 {
#include "simd_avx2.h"
#include "cpu_adam_kernels.inc"
}  // namespace ds::cpu_optim::avx2
DS_TARGET_END
#endif
