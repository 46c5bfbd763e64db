#pragma once
// What the torch-facing CUDA impl (fused_adam_cuda.cpp) hands the kernels (fused_adam.cu):
// raw pointers grouped into launches, so the .cu file needs no torch headers.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace ds::fused_adam {

constexpr int kMaxTensors = 36;       // per launch; the Batch stays under 4 KB of kernel parameters
constexpr int kMaxBlocks = 320;       // per launch
constexpr int64_t kChunk = 65536;     // elements per block
constexpr int kThreads = 512;

enum class ParamType : int { f32, f16, bf16 };

// One kernel launch: block b updates chunk block_chunk[b] of tensor block_tensor[b].
struct Batch {
  void* params[kMaxTensors];
  const void* grads[kMaxTensors];
  float* exp_avgs[kMaxTensors];
  float* exp_avg_sqs[kMaxTensors];
  const float* steps[kMaxTensors];
  int64_t numels[kMaxTensors];
  uint8_t block_tensor[kMaxBlocks];
  int32_t block_chunk[kMaxBlocks];
  int num_tensors;
  int num_blocks;
};

struct Hyper {
  double lr, beta1, beta2, eps, weight_decay;
  bool bias_correction, adamw_mode;
};

// Updates the batch's chunks with step = *steps[t] + 1, unless *noop_flag != 0.
cudaError_t launch_adam_batch(const Batch& batch, ParamType type, const Hyper& hyper, const int* noop_flag,
                              cudaStream_t stream);

constexpr int kMaxStepsPerLaunch = 256;

struct StepBatch {
  float* steps[kMaxStepsPerLaunch];
  int count;
};

// Adds one to each step counter of the batch, unless *noop_flag != 0. Launched after
// every Adam batch of the step, since one tensor's chunks can span several batches.
cudaError_t launch_advance_steps(const StepBatch& batch, const int* noop_flag, cudaStream_t stream);

}  // namespace ds::fused_adam
