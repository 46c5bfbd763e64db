// CUDA impls of the sparse attention ops: the CPU impls' checks and jobs
// (sparse_attention_calls.h), then the kernels of sparse_attention.cu on the current stream.
// The look-up table and the optional tensors must be on the inputs' GPU (checked).
#include <torch/library.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <tuple>

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

// The fused attention on the GPU runs the three kernels in turn (scores held in GPU memory);
// backward recomputes the probabilities the same way.
at::Tensor attention_probabilities_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& lut, int64_t block,
                                        double scale, const std::optional<at::Tensor>& rpe,
                                        const std::optional<at::Tensor>& key_padding_mask,
                                        const std::optional<at::Tensor>& attn_mask, int64_t key_padding_mode,
                                        int64_t attn_mode, bool causal) {
  return softmax_cuda(sdd_cuda(q, k, lut, block), lut, q.size(1), q.size(2), block, scale, rpe, key_padding_mask,
                      attn_mask, key_padding_mode, attn_mode, causal);
}

at::Tensor attention_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& lut,
                          int64_t block, double scale, const std::optional<at::Tensor>& rpe,
                          const std::optional<at::Tensor>& key_padding_mask, const std::optional<at::Tensor>& attn_mask,
                          int64_t key_padding_mode, int64_t attn_mode, bool causal) {
  attention_call(q, k, v, lut, block, scale, rpe, key_padding_mask, attn_mask, key_padding_mode, attn_mode, causal,
                 "sparse_attention");
  const at::Tensor probs = attention_probabilities_cuda(q, k, lut, block, scale, rpe, key_padding_mask, attn_mask,
                                                        key_padding_mode, attn_mode, causal);
  return dsd_cuda(probs, v, lut, block, false);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_cuda(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& lut,
    int64_t block, double scale, const std::optional<at::Tensor>& rpe, const std::optional<at::Tensor>& key_padding_mask,
    const std::optional<at::Tensor>& attn_mask, int64_t key_padding_mode, int64_t attn_mode, bool causal) {
  attention_call(q, k, v, lut, block, scale, rpe, key_padding_mask, attn_mask, key_padding_mode, attn_mode, causal,
                 "sparse_attention_backward");
  const at::Tensor probs = attention_probabilities_cuda(q, k, lut, block, scale, rpe, key_padding_mask, attn_mask,
                                                        key_padding_mode, attn_mode, causal);
  const at::Tensor g = grad.contiguous().to(v.scalar_type());
  const at::Tensor score_grads = softmax_backward_cuda(probs, sdd_cuda(g, v, lut, block), lut, q.size(1), q.size(2),
                                                       block, scale);
  return {dsd_cuda(score_grads, k, lut, block, false), dsd_cuda(score_grads, q, lut, block, true),
          dsd_cuda(probs, g, lut, block, true)};
}

}  // namespace

TORCH_LIBRARY_IMPL(deepspeed_ext, CUDA, m) {
  m.impl("sparse_attention", &attention_cuda);
  m.impl("sparse_attention_backward", &attention_backward_cuda);
  m.impl("sparse_sdd", &sdd_cuda);
  m.impl("sparse_dsd", &dsd_cuda);
  m.impl("sparse_softmax", &softmax_cuda);
  m.impl("sparse_softmax_backward", &softmax_backward_cuda);
}

}  // namespace ds::sparse_attention
