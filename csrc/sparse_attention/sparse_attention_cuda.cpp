// CUDA impls of the sparse attention ops: the CPU impls' checks and jobs
// (sparse_attention_calls.h), then the kernels of sparse_attention.cu on the current stream.
// The look-up table and the optional tensors must be on the inputs' GPU (checked).
#include <torch/library.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "sparse_attention_calls.h"
#include "sparse_attention_cuda.h"

namespace ds::sparse_attention {
namespace {

template <class Job>
at::Tensor launched(const Call<Job>& call, cudaError_t (*launch)(const Job&, const Lut&, const Shape&, cudaStream_t),
                    const char* op) {
  const cudaError_t status = launch(call.job, call.lut, call.shape, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(status == cudaSuccess, op, ": kernel launch failed: ", cudaGetErrorString(status));
  return call.out;
}

at::Tensor sdd_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& lut, int64_t block) {
  const c10::cuda::CUDAGuard guard(a.device());
  return launched(sdd_call(a, b, lut, block), launch_sdd, "sparse_sdd");
}

at::Tensor dsd_cuda(const at::Tensor& s, const at::Tensor& v, const at::Tensor& lut, int64_t block, bool transpose) {
  const c10::cuda::CUDAGuard guard(v.device());
  return launched(dsd_call(s, v, lut, block, transpose), launch_dsd, "sparse_dsd");
}

at::Tensor softmax_cuda(const at::Tensor& scores, const at::Tensor& lut, int64_t heads, int64_t seq, int64_t block,
                        double scale, const std::optional<at::Tensor>& rpe,
                        const std::optional<at::Tensor>& key_padding_mask, const std::optional<at::Tensor>& attn_mask,
                        int64_t key_padding_mode, int64_t attn_mode, bool causal) {
  const c10::cuda::CUDAGuard guard(scores.device());
  return launched(softmax_call(scores, lut, heads, seq, block, scale, rpe, key_padding_mask, attn_mask,
                               key_padding_mode, attn_mode, causal), launch_softmax, "sparse_softmax");
}

at::Tensor softmax_backward_cuda(const at::Tensor& probs, const at::Tensor& grad, const at::Tensor& lut,
                                 int64_t heads, int64_t seq, int64_t block, double scale) {
  const c10::cuda::CUDAGuard guard(probs.device());
  return launched(softmax_grad_call(probs, grad, lut, heads, seq, block, scale), launch_softmax_grad,
                  "sparse_softmax_backward");
}

}  // namespace

TORCH_LIBRARY_IMPL(deepspeed_ext, CUDA, m) {
  m.impl("sparse_sdd", &sdd_cuda);
  m.impl("sparse_dsd", &dsd_cuda);
  m.impl("sparse_softmax", &softmax_cuda);
  m.impl("sparse_softmax_backward", &softmax_backward_cuda);
}

}  // namespace ds::sparse_attention
