#pragma once
// DS_INLINE marks per-element math that CPU and CUDA kernels share.
//
// It forces inlining on purpose: the CPU kernels include these headers once per
// instruction set (see simd.h). Every caller then gets the math compiled for its
// own instruction set, and no out-of-line AVX-512 copy exists for the linker to
// hand to the scalar path of a CPU that lacks AVX-512.
#if defined(__CUDACC__)
#define DS_INLINE __host__ __device__ __forceinline__
#else
#define DS_INLINE inline __attribute__((always_inline))
#endif
