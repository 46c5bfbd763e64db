// CUDA impl of the fused_adam op: checks the tensors, packs them into launches of at most
// kMaxTensors tensors / kMaxBlocks chunks, and runs the kernels of fused_adam.cu on the
// current stream. Compiled only where torch has CUDA.
#include <torch/library.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "fused_adam_cuda.h"

namespace ds::fused_adam {
namespace {

constexpr const char* kOp = "fused_adam_step";

void check_cuda(cudaError_t status) {
  TORCH_CHECK(status == cudaSuccess, kOp, ": kernel launch failed: ", cudaGetErrorString(status));
}

void check_tensor(const at::Tensor& t, const at::Tensor& param, const char* what, size_t i, at::ScalarType dtype) {
  TORCH_CHECK(t.device() == param.device(), kOp, ": ", what, "[", i, "] is on ", t.device(), " but params are on ",
              param.device());
  TORCH_CHECK(t.layout() == at::kStrided && t.is_contiguous(), kOp, ": ", what, "[", i,
              "] must be a dense contiguous tensor");
  TORCH_CHECK(t.scalar_type() == dtype, kOp, ": ", what, "[", i, "] has dtype ", t.scalar_type(), ", expected ",
              dtype);
}

ParamType param_type(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return ParamType::f32;
    case at::kHalf: return ParamType::f16;
    case at::kBFloat16: return ParamType::bf16;
    default: TORCH_CHECK(false, kOp, ": params must be float32, float16 or bfloat16, got ", dtype);
  }
}

void fused_adam_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                          at::TensorList exp_avg_sqs, at::TensorList steps, const at::Tensor& noop_flag, double lr,
                          double beta1, double beta2, double eps, double weight_decay, bool bias_correction,
                          bool adamw_mode) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && exp_avgs.size() == n && exp_avg_sqs.size() == n && steps.size() == n, kOp,
              ": params, grads, exp_avgs, exp_avg_sqs and steps must be lists of the same length");
  if (n == 0) return;
  const at::Tensor& first = params[0];
  const at::ScalarType dtype = first.scalar_type();
  const ParamType type = param_type(dtype);
  TORCH_CHECK(noop_flag.numel() == 1, kOp, ": noop_flag must hold one element");
  check_tensor(noop_flag, first, "noop_flag", 0, at::kInt);
  for (size_t i = 0; i < n; ++i) {
    check_tensor(params[i], first, "params", i, dtype);
    check_tensor(grads[i], first, "grads", i, dtype);
    check_tensor(exp_avgs[i], first, "exp_avgs", i, at::kFloat);
    check_tensor(exp_avg_sqs[i], first, "exp_avg_sqs", i, at::kFloat);
    check_tensor(steps[i], first, "steps", i, at::kFloat);
    TORCH_CHECK(steps[i].numel() == 1, kOp, ": steps[", i, "] must hold one element");
    for (const at::Tensor* t : {&grads[i], &exp_avgs[i], &exp_avg_sqs[i]}) {
      TORCH_CHECK(t->sizes() == params[i].sizes(), kOp, ": tensors of params[", i, "] must have its shape ",
                  params[i].sizes());
    }
  }
  const c10::cuda::CUDAGuard guard(first.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const Hyper hyper{lr, beta1, beta2, eps, weight_decay, bias_correction, adamw_mode};
  const int* noop = noop_flag.data_ptr<int>();

  Batch batch{};
  for (size_t i = 0; i < n; ++i) {
    const int64_t numel = params[i].numel();
    const int64_t chunks = (numel + kChunk - 1) / kChunk;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const bool tensor_listed = batch.num_tensors > 0 && batch.params[batch.num_tensors - 1] == params[i].data_ptr();
      if (!tensor_listed && batch.num_tensors == kMaxTensors) {
        check_cuda(launch_adam_batch(batch, type, hyper, noop, stream));
        batch = Batch{};
      }
      if (!tensor_listed || batch.num_blocks == kMaxBlocks) {
        if (batch.num_blocks == kMaxBlocks) {  // a tensor split across launches is listed again in the next
          check_cuda(launch_adam_batch(batch, type, hyper, noop, stream));
          batch = Batch{};
        }
        const int t = batch.num_tensors++;
        batch.params[t] = params[i].data_ptr();
        batch.grads[t] = grads[i].data_ptr();
        batch.exp_avgs[t] = exp_avgs[i].data_ptr<float>();
        batch.exp_avg_sqs[t] = exp_avg_sqs[i].data_ptr<float>();
        batch.steps[t] = steps[i].data_ptr<float>();
        batch.numels[t] = numel;
      }
      batch.block_tensor[batch.num_blocks] = static_cast<uint8_t>(batch.num_tensors - 1);
      batch.block_chunk[batch.num_blocks] = static_cast<int32_t>(chunk);
      ++batch.num_blocks;
    }
  }
  check_cuda(launch_adam_batch(batch, type, hyper, noop, stream));

  StepBatch step_batch{};
  for (size_t i = 0; i < n; ++i) {
    step_batch.steps[step_batch.count++] = steps[i].data_ptr<float>();
    if (step_batch.count == kMaxStepsPerLaunch || i + 1 == n) {
      check_cuda(launch_advance_steps(step_batch, noop, stream));
      step_batch = StepBatch{};
    }
  }
}

}  // namespace
}  // namespace ds::fused_adam

TORCH_LIBRARY_IMPL(deepspeed_ext, CUDA, m) { m.impl("fused_adam_step", &ds::fused_adam::fused_adam_step_cuda); }
