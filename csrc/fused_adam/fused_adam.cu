// CUDA kernels of the fused_adam op: multi-tensor Adam, many tensors per launch, chunked,
// 4-wide vector loads when aligned, 64-bit indexing, fp32 / fp16 / bf16 params with fp32
// states and fp32 math. The update is optimizer_math.h's adam_update, the very function
// the CPU kernels run, and fp16 / bf16 go through float_convert.h's conversions, so a
// GPU step rounds exactly like the CPU one (built with --fmad=false).
#include <cstdint>

#include "fused_adam_cuda.h"
#include "optimizer_coeffs.h"
#include "float_convert.h"
#include "optimizer_math.h"

namespace ds::fused_adam {
namespace {

struct F32 {
  using Storage = float;
  static __device__ float load(float x) { return x; }
  static __device__ float store(float x) { return x; }
};
struct F16 {
  using Storage = uint16_t;
  static __device__ float load(uint16_t x) { return fp16_to_float(x); }
  static __device__ uint16_t store(float x) { return float_to_fp16(x); }
};
struct BF16 {
  using Storage = uint16_t;
  static __device__ float load(uint16_t x) { return bf16_to_float(x); }
  static __device__ uint16_t store(float x) { return float_to_bf16(x); }
};

constexpr int kVector = 4;

template <class T>
struct alignas(sizeof(T) * kVector) Vector {
  T lane[kVector];
};

template <class T>
__device__ bool is_vector_aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % sizeof(Vector<T>) == 0;
}

template <class Type>
__global__ void __launch_bounds__(kThreads) adam_batch_kernel(Batch batch, Hyper h, const int* noop_flag) {
  using S = typename Type::Storage;
  if (*noop_flag != 0) return;
  const int t = batch.block_tensor[blockIdx.x];
  __shared__ ::ds::AdamCoeffs coeffs;
  if (threadIdx.x == 0) {
    coeffs = ::ds::make_adam_coeffs(h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, double(*batch.steps[t]) + 1.0,
                                    h.bias_correction, h.adamw_mode);
  }
  __syncthreads();
  const ::ds::AdamCoeffs c = coeffs;
  S* param = static_cast<S*>(batch.params[t]);
  const S* grad = static_cast<const S*>(batch.grads[t]);
  float* exp_avg = batch.exp_avgs[t];
  float* exp_avg_sq = batch.exp_avg_sqs[t];
  const int64_t begin = int64_t(batch.block_chunk[blockIdx.x]) * kChunk;
  const int64_t end = begin + kChunk < batch.numels[t] ? begin + kChunk : batch.numels[t];
  const bool vectorised = is_vector_aligned<S>(param) && is_vector_aligned<S>(grad) &&
                          is_vector_aligned<float>(exp_avg) && is_vector_aligned<float>(exp_avg_sq);
  for (int64_t i = begin + int64_t(threadIdx.x) * kVector; i < end; i += int64_t(blockDim.x) * kVector) {
    if (vectorised && i + kVector <= end) {
      Vector<S> p = *reinterpret_cast<const Vector<S>*>(param + i);
      const Vector<S> g = *reinterpret_cast<const Vector<S>*>(grad + i);
      Vector<float> m = *reinterpret_cast<const Vector<float>*>(exp_avg + i);
      Vector<float> v = *reinterpret_cast<const Vector<float>*>(exp_avg_sq + i);
#pragma unroll
      for (int k = 0; k < kVector; ++k) {
        float value = Type::load(p.lane[k]);
        adam_update(value, Type::load(g.lane[k]), m.lane[k], v.lane[k], c);
        p.lane[k] = Type::store(value);
      }
      *reinterpret_cast<Vector<S>*>(param + i) = p;
      *reinterpret_cast<Vector<float>*>(exp_avg + i) = m;
      *reinterpret_cast<Vector<float>*>(exp_avg_sq + i) = v;
    } else {
      for (int64_t j = i; j < i + kVector && j < end; ++j) {
        float value = Type::load(param[j]);
        adam_update(value, Type::load(grad[j]), exp_avg[j], exp_avg_sq[j], c);
        param[j] = Type::store(value);
      }
    }
  }
}

__global__ void advance_steps_kernel(StepBatch batch, const int* noop_flag) {
  if (*noop_flag == 0 && int(threadIdx.x) < batch.count) *batch.steps[threadIdx.x] += 1.0f;
}

}  // namespace

cudaError_t launch_adam_batch(const Batch& batch, ParamType type, const Hyper& hyper, const int* noop_flag,
                              cudaStream_t stream) {
  if (batch.num_blocks == 0) return cudaSuccess;
  switch (type) {
    case ParamType::f32: adam_batch_kernel<F32><<<batch.num_blocks, kThreads, 0, stream>>>(batch, hyper, noop_flag); break;
    case ParamType::f16: adam_batch_kernel<F16><<<batch.num_blocks, kThreads, 0, stream>>>(batch, hyper, noop_flag); break;
    case ParamType::bf16: adam_batch_kernel<BF16><<<batch.num_blocks, kThreads, 0, stream>>>(batch, hyper, noop_flag); break;
  }
  return cudaGetLastError();
}

cudaError_t launch_advance_steps(const StepBatch& batch, const int* noop_flag, cudaStream_t stream) {
  if (batch.count == 0) return cudaSuccess;
  advance_steps_kernel<<<1, kMaxStepsPerLaunch, 0, stream>>>(batch, noop_flag);
  return cudaGetLastError();
}

}  // namespace ds::fused_adam
