// CUDA kernels of the sparse attention ops. One thread block per output block (SDD: a nonzero
// block; DSD: a block row or column of one head) with threads over its elements; softmax one
// thread per query row, through the same sparse_softmax_math.h functions the CPU runs. T is
// float, or double for fp64 inputs, as on the CPU.
#include <cstdint>

#include "float_convert.h"
#include "sparse_attention_cuda.h"
#include "sparse_softmax_math.h"

namespace ds::sparse_attention {
namespace {

constexpr int kThreads = 256;

template <class T>
__device__ __forceinline__ T load_value(const void* data, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::f32: return T(static_cast<const float*>(data)[i]);
    case DType::f64: return T(static_cast<const double*>(data)[i]);
    case DType::bf16: return T(bf16_to_float(static_cast<const uint16_t*>(data)[i]));
    default: return T(fp16_to_float(static_cast<const uint16_t*>(data)[i]));
  }
}

template <class T>
__device__ __forceinline__ void store_value(void* data, DType dtype, int64_t i, T value) {
  switch (dtype) {
    case DType::f32: static_cast<float*>(data)[i] = float(value); break;
    case DType::f64: static_cast<double*>(data)[i] = double(value); break;
    case DType::bf16: static_cast<uint16_t*>(data)[i] = float_to_bf16(float(value)); break;
    default: static_cast<uint16_t*>(data)[i] = float_to_fp16(float(value)); break;
  }
}

template <class T>
__device__ __forceinline__ T optional_at(const void* data, int64_t index) {
  return data ? static_cast<const T*>(data)[index] : T(0);
}

__device__ __forceinline__ int64_t block_offset(const Shape& shape, int64_t b, int64_t head, int64_t block) {
  return ((b * shape.heads + head) * shape.seq + block * shape.block) * shape.dim;
}

template <class T>
__global__ void sdd_kernel(SddJob job, Lut lut, Shape shape) {
  const int64_t unit = blockIdx.x, b = unit / lut.nnz, n = unit % lut.nnz;
  const int64_t bs = shape.block, dim = shape.dim;
  const int64_t a_at = block_offset(shape, b, lut.heads[n], lut.rows[n]);
  const int64_t b_at = block_offset(shape, b, lut.heads[n], lut.cols[n]);
  for (int64_t e = threadIdx.x; e < bs * bs; e += blockDim.x) {
    const int64_t i = e / bs, j = e % bs;
    T sum = T(0);
    for (int64_t d = 0; d < dim; ++d)
      sum += load_value<T>(job.a, job.dtype, a_at + i * dim + d) * load_value<T>(job.b, job.dtype, b_at + j * dim + d);
    static_cast<T*>(job.out)[unit * bs * bs + e] = sum;
  }
}

template <class T>
__global__ void dsd_kernel(DsdJob job, Lut lut, Shape shape) {
  const int64_t blocks = shape.blocks(), unit = blockIdx.x;
  const int64_t b = unit / (shape.heads * blocks), head = (unit / blocks) % shape.heads, block = unit % blocks;
  const int64_t bs = shape.block, dim = shape.dim;
  const int32_t* pointers = job.transpose ? lut.col_ptr : lut.row_ptr;
  for (int64_t e = threadIdx.x; e < bs * dim; e += blockDim.x) {
    const int64_t i = e / dim, d = e % dim;
    T sum = T(0);
    for (int32_t k = pointers[head * blocks + block]; k < pointers[head * blocks + block + 1]; ++k) {
      const int64_t n = job.transpose ? lut.by_col[k] : k;
      const int64_t other = block_offset(shape, b, head, job.transpose ? lut.rows[n] : lut.cols[n]);
      const T* s = static_cast<const T*>(job.s) + (b * lut.nnz + n) * bs * bs;
      for (int64_t j = 0; j < bs; ++j)
        sum += (job.transpose ? s[j * bs + i] : s[i * bs + j]) * load_value<T>(job.v, job.dtype, other + j * dim + d);
    }
    store_value<T>(job.out, job.dtype, block_offset(shape, b, head, block) + e, sum);
  }
}

// The query row this thread handles: its batch, head and position, and the nonzero blocks
// [begin, end) of its block row; false for the threads past the last row.
struct QueryRow {
  int64_t b, head, query, i;
  int32_t begin, end;
};

__device__ __forceinline__ bool query_row(const Shape& shape, const Lut& lut, QueryRow* row) {
  const int64_t unit = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (unit >= shape.batch * shape.heads * shape.seq) return false;
  row->b = unit / (shape.heads * shape.seq);
  row->head = (unit / shape.seq) % shape.heads;
  row->query = unit % shape.seq;
  row->i = row->query % shape.block;
  const int64_t at = row->head * shape.blocks() + row->query / shape.block;
  row->begin = lut.row_ptr[at];
  row->end = lut.row_ptr[at + 1];
  return true;
}

template <class T>
__global__ void softmax_kernel(SoftmaxJob job, Lut lut, Shape shape) {
  QueryRow r;
  if (!query_row(shape, lut, &r)) return;
  const int64_t bs = shape.block, seq = shape.seq, b = r.b, head = r.head, query = r.query, i = r.i;
  const int32_t begin = r.begin, end = r.end;
  const T* scores = static_cast<const T*>(job.scores);
  T* probs = static_cast<T*>(job.probs);
  T row_max = negative_infinity<T>();
  for (int32_t n = begin; n < end; ++n) {
    const int64_t at = ((b * lut.nnz + n) * bs + i) * bs;
    for (int64_t j = 0; j < bs; ++j) {
      const int64_t key = int64_t(lut.cols[n]) * bs + j;
      const T logit = attention_logit<T>(
          scores[at + j], T(job.scale), optional_at<T>(job.bias, (head * seq + query) * seq + key),
          optional_at<T>(job.key_padding, b * seq + key), job.key_padding_mode,
          optional_at<T>(job.attention, query * seq + key), job.attention_mode, job.causal && key > query);
      probs[at + j] = logit;
      row_max = max_keeping_nan(logit, row_max);
    }
  }
  T sum = T(0);
  for (int32_t n = begin; n < end; ++n) {
    T* row_probs = probs + ((b * lut.nnz + n) * bs + i) * bs;
    for (int64_t j = 0; j < bs; ++j) {
      row_probs[j] = unnormalized_probability(row_probs[j], row_max);
      sum += row_probs[j];
    }
  }
  const T inverse = row_normalizer(sum);
  for (int32_t n = begin; n < end; ++n) {
    T* row_probs = probs + ((b * lut.nnz + n) * bs + i) * bs;
    for (int64_t j = 0; j < bs; ++j) row_probs[j] *= inverse;
  }
}

template <class T>
__global__ void softmax_grad_kernel(SoftmaxGradJob job, Lut lut, Shape shape) {
  QueryRow r;
  if (!query_row(shape, lut, &r)) return;
  const int64_t bs = shape.block, seq = shape.seq, b = r.b, head = r.head, query = r.query, i = r.i;
  const int32_t begin = r.begin, end = r.end;
  const T* probs = static_cast<const T*>(job.probs);
  const T* grad = static_cast<const T*>(job.grad);
  T dot = T(0);
  for (int32_t n = begin; n < end; ++n) {
    const int64_t at = ((b * lut.nnz + n) * bs + i) * bs;
    for (int64_t j = 0; j < bs; ++j) dot += probs[at + j] * grad[at + j];
  }
  for (int32_t n = begin; n < end; ++n) {
    const int64_t at = ((b * lut.nnz + n) * bs + i) * bs;
    for (int64_t j = 0; j < bs; ++j)
      static_cast<T*>(job.out)[at + j] = softmax_score_grad(probs[at + j], grad[at + j], dot, T(job.scale));
  }
}

unsigned int row_grid(const Shape& shape) {
  return static_cast<unsigned int>((shape.batch * shape.heads * shape.seq + kThreads - 1) / kThreads);
}

}  // namespace

cudaError_t launch_sdd(const SddJob& job, const Lut& lut, const Shape& shape, cudaStream_t stream) {
  const unsigned int grid = static_cast<unsigned int>(shape.batch * lut.nnz);
  if (grid == 0) return cudaSuccess;
  if (job.dtype == DType::f64) sdd_kernel<double><<<grid, kThreads, 0, stream>>>(job, lut, shape);
  else sdd_kernel<float><<<grid, kThreads, 0, stream>>>(job, lut, shape);
  return cudaGetLastError();
}

cudaError_t launch_dsd(const DsdJob& job, const Lut& lut, const Shape& shape, cudaStream_t stream) {
  const unsigned int grid = static_cast<unsigned int>(shape.batch * shape.heads * shape.blocks());
  if (grid == 0) return cudaSuccess;
  if (job.dtype == DType::f64) dsd_kernel<double><<<grid, kThreads, 0, stream>>>(job, lut, shape);
  else dsd_kernel<float><<<grid, kThreads, 0, stream>>>(job, lut, shape);
  return cudaGetLastError();
}

cudaError_t launch_softmax(const SoftmaxJob& job, const Lut& lut, const Shape& shape, cudaStream_t stream) {
  if (row_grid(shape) == 0) return cudaSuccess;
  if (job.f64) softmax_kernel<double><<<row_grid(shape), kThreads, 0, stream>>>(job, lut, shape);
  else softmax_kernel<float><<<row_grid(shape), kThreads, 0, stream>>>(job, lut, shape);
  return cudaGetLastError();
}

cudaError_t launch_softmax_grad(const SoftmaxGradJob& job, const Lut& lut, const Shape& shape, cudaStream_t stream) {
  if (row_grid(shape) == 0) return cudaSuccess;
  if (job.f64) softmax_grad_kernel<double><<<row_grid(shape), kThreads, 0, stream>>>(job, lut, shape);
  else softmax_grad_kernel<float><<<row_grid(shape), kThreads, 0, stream>>>(job, lut, shape);
  return cudaGetLastError();
}

}  // namespace ds::sparse_attention
