#pragma once
// Row-major GEMM on raw pointers through the Fortran BLAS interface libtorch_cpu exports (its
// bundled MKL on x86): no tensor objects per call. For kernels that run thousands of small
// products per call, where building tensor views for at::mm cost a tenth of the time.
#include <cstdint>

extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c, const int* ldc);
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc);
}

namespace ds {

// c (m x n) = alpha * op(a) (m x k) * op(b) (k x n) + beta * c, all row-major. BLAS is
// column-major, where a row-major matrix reads as its transpose: so it computes c^T = op(b)^T op(a)^T.
template <class T>
inline void gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
                 const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  const char ta = transpose_a ? 'T' : 'N', tb = transpose_b ? 'T' : 'N';
  const int im = int(m), in = int(n), ik = int(k), ilda = int(lda), ildb = int(ldb), ildc = int(ldc);
  if constexpr (sizeof(T) == sizeof(float))
    sgemm_(&tb, &ta, &in, &im, &ik, &alpha, b, &ildb, a, &ilda, &beta, c, &ildc);
  else
    dgemm_(&tb, &ta, &in, &im, &ik, &alpha, b, &ildb, a, &ilda, &beta, c, &ildc);
}

}  // namespace ds
