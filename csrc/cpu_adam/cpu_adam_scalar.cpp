// Portable build of the CPU optimizer kernels (no SIMD instructions named).
#include "simd.h"
#include "cpu_adam.h"

namespace ds::cpu_optim::scalar {
#include "simd_scalar.h"
#include "cpu_adam_kernels.inc"
}  // namespace ds::cpu_optim::scalar
