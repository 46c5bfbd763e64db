// AVX-512 build of the CPU optimizer kernels; dispatched to only where the CPU has AVX-512.
#include "simd.h"
#include "cpu_adam.h"

#if DS_SIMD_X86
DS_TARGET_BEGIN_AVX512
namespace ds::cpu_optim::avx512 {
#include "simd_avx512.h"
#include "cpu_adam_kernels.inc"
}  // namespace ds::cpu_optim::avx512
DS_TARGET_END
#endif
