// Portable build of the CPU optimizer kernels (no SIMD instructions named).
#include "simd.h"
#include "cpu_optimizer.h"

namespace ds::cpu_optim::scalar {
#include "simd_scalar.h"
#include "cpu_optimizer_kernels.inc"
}  // namespace ds::cpu_optim::scalar
