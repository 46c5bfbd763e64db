// CUDA kernels of the quantizer op: one block a group, the statistics reduced in shared
// memory, then every element through the same quantize_math.h functions the CPU runs.
#include <cstdint>

#include "float_convert.h"
#include "quantize_math.h"
#include "quantizer_cuda.h"

namespace ds::quantizer {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float load_value(const void* data, DType dtype, int64_t i) {
  if (dtype == DType::f32) return static_cast<const float*>(data)[i];
  const uint16_t bits = static_cast<const uint16_t*>(data)[i];
  return dtype == DType::bf16 ? bf16_to_float(bits) : fp16_to_float(bits);
}

__device__ __forceinline__ void store_value(void* data, DType dtype, int64_t i, float value) {
  if (dtype == DType::f32) {
    static_cast<float*>(data)[i] = value;
  } else {
    static_cast<uint16_t*>(data)[i] = dtype == DType::bf16 ? float_to_bf16(value) : float_to_fp16(value);
  }
}

__global__ void quantize_kernel(QuantizeJob job, unsigned long long* bad_group) {
  __shared__ float lows[kThreads], highs[kThreads], probes[kThreads];
  __shared__ QuantParams params;
  const int64_t group = blockIdx.x;
  const int64_t start = group * job.group_size;
  float lo = __int_as_float(0x7f800000), hi = -__int_as_float(0x7f800000), probe = 0.0f;
  for (int64_t i = threadIdx.x; i < job.group_size; i += blockDim.x) {
    const float x = load_value(job.input, job.dtype, start + i);
    probe += x * 0.0f;  // NaN once any element is inf or NaN
    const float v = job.symmetric ? fabsf(x) : x;
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  lows[threadIdx.x] = lo;
  highs[threadIdx.x] = hi;
  probes[threadIdx.x] = probe;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      lows[threadIdx.x] = fminf(lows[threadIdx.x], lows[threadIdx.x + stride]);
      highs[threadIdx.x] = fmaxf(highs[threadIdx.x], highs[threadIdx.x + stride]);
      probes[threadIdx.x] += probes[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    params = job.symmetric ? symmetric_params(highs[0], job.bits) : asymmetric_params(lows[0], highs[0], job.bits);
    if (probes[0] != 0.0f) atomicMin(bad_group, static_cast<unsigned long long>(group));
    job.scales[group] = params.scale;
    job.offsets[group] = params.offset;
  }
  __syncthreads();
  const QuantParams p = params;
  const int per_byte = job.bits == 8 ? 1 : 2;
  uint8_t* out = job.packed + start / per_byte;
  for (int64_t b = threadIdx.x; b < job.group_size / per_byte; b += blockDim.x) {
    int levels[2];
    for (int k = 0; k < per_byte; ++k) {
      const int64_t i = b * per_byte + k;
      const float u = job.stochastic ? uniform01(job.key, static_cast<unsigned int>(start + i)) : 0.0f;
      levels[k] = static_cast<int>(quantize_level(load_value(job.input, job.dtype, start + i), p, job.symmetric, job.stochastic, u));
    }
    out[b] = per_byte == 1 ? static_cast<uint8_t>(levels[0]) : pack_nibbles(levels[0], levels[1]);
  }
}

__global__ void dequantize_kernel(DequantizeJob job) {
  const int64_t group = blockIdx.x;
  const int64_t start = group * job.group_size;
  const float scale = job.scales[group], offset = job.offsets[group];
  for (int64_t i = threadIdx.x; i < job.group_size; i += blockDim.x) {
    float level;
    if (job.bits == 8) {
      const uint8_t byte = job.packed[start + i];
      level = job.symmetric ? float(static_cast<int8_t>(byte)) : float(byte);
    } else {
      level = float(unpack_nibble(job.packed[(start + i) / 2], static_cast<int>(i & 1), job.symmetric));
    }
    store_value(job.output, job.dtype, start + i, dequantize_level(level, scale, offset, job.symmetric));
  }
}

}  // namespace

cudaError_t launch_quantize(const QuantizeJob& job, int64_t groups, unsigned long long* bad_group,
                            cudaStream_t stream) {
  if (groups == 0) return cudaSuccess;
  quantize_kernel<<<static_cast<unsigned int>(groups), kThreads, 0, stream>>>(job, bad_group);
  return cudaGetLastError();
}

cudaError_t launch_dequantize(const DequantizeJob& job, int64_t groups, cudaStream_t stream) {
  if (groups == 0) return cudaSuccess;
  dequantize_kernel<<<static_cast<unsigned int>(groups), kThreads, 0, stream>>>(job);
  return cudaGetLastError();
}

}  // namespace ds::quantizer
