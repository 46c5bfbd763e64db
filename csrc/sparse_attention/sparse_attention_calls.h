#pragma once
// Each op's checks, output allocation and kernel job, shared by the CPU impls
// (sparse_attention_ops.cpp) and the CUDA impls (sparse_attention_cuda.cpp).
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <utility>

#include "sparse_attention_checks.h"

namespace ds::sparse_attention {

template <class Job>
struct Call {
  Job job;
  Lut lut;
  Shape shape;
  at::Tensor out;
  int64_t units;  // CPU work units: nonzero blocks (sdd) or block rows (the others), times batch
};

inline Call<SddJob> sdd_call(const at::Tensor& a, const at::Tensor& b, const at::Tensor& lut_tensor, int64_t block) {
  const Shape shape = check_dense(a, "sparse_sdd", "a", block);
  check_dense(b, "sparse_sdd", "b", block);
  TORCH_CHECK(a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && a.device() == b.device(),
              "sparse_sdd: a and b must have the same shape, dtype and device, got ", a.sizes(), " ", a.scalar_type(),
              " and ", b.sizes(), " ", b.scalar_type());
  const Lut lut = check_lut(lut_tensor, shape, a, "sparse_sdd");
  auto out = at::empty({shape.batch, lut.nnz, block, block}, a.options().dtype(scores_type(a.scalar_type())));
  return {{a.data_ptr(), b.data_ptr(), dtype_of(a), out.data_ptr()}, lut, shape, out, shape.batch * lut.nnz};
}

inline Call<DsdJob> dsd_call(const at::Tensor& s, const at::Tensor& v, const at::Tensor& lut_tensor, int64_t block,
                             bool transpose) {
  const Shape shape = check_dense(v, "sparse_dsd", "v", block);
  const Lut lut = check_lut(lut_tensor, shape, v, "sparse_dsd");
  check_blocks(s, shape, lut, scores_type(v.scalar_type()), "sparse_dsd", "s");
  auto out = at::empty_like(v);
  return {{s.data_ptr(), v.data_ptr(), dtype_of(v), out.data_ptr(), transpose}, lut, shape, out,
          shape.batch * shape.heads * shape.blocks()};
}

// Scores carry (batch, nnz, block, block) but not heads or seq: the caller passes those.
inline Shape scores_shape(const at::Tensor& scores, int64_t heads, int64_t seq, int64_t block, const char* op) {
  TORCH_CHECK(scores.dim() == 4, op, ": scores must be (batch, nonzero blocks, block, block), got ", scores.sizes());
  TORCH_CHECK(scores.scalar_type() == at::kFloat || scores.scalar_type() == at::kDouble, op,
              ": scores must be float32 (or float64), got ", scores.scalar_type());
  check_block_size(block, op);
  TORCH_CHECK(seq % block == 0, op, ": sequence length ", seq, " is not a multiple of the block size ", block,
              "; pad it with SparseAttentionUtils.pad_to_block_size");
  return {scores.size(0), heads, seq, 1, block};
}

// The bias and masks of a softmax job, checked against the scores' dtype `type` and `device`.
inline SoftmaxJob softmax_job(const void* scores, void* probs, at::ScalarType type, at::Device device,
                              const Shape& shape, double scale,
                              const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& key_padding_mask,
                              const std::optional<at::Tensor>& attn_mask, int64_t key_padding_mode, int64_t attn_mode,
                              bool causal, const char* op) {
  check_mode(key_padding_mode, op, "key_padding_mask_mode");
  check_mode(attn_mode, op, "attn_mask_mode");
  const int64_t heads = shape.heads, seq = shape.seq;
  return {scores, probs, type == at::kDouble, scale,
          optional_input(bias, {heads, seq, seq}, op, "rpe", type, device),
          optional_input(key_padding_mask, {shape.batch, seq}, op, "key_padding_mask", type, device),
          int(key_padding_mask.has_value() ? key_padding_mode : 0),
          optional_input(attn_mask, {seq, seq}, op, "attn_mask", type, device),
          int(attn_mask.has_value() ? attn_mode : 0), causal};
}

inline Call<SoftmaxJob> softmax_call(const at::Tensor& scores, const at::Tensor& lut_tensor, int64_t heads, int64_t seq,
                                     int64_t block, double scale, const std::optional<at::Tensor>& bias,
                                     const std::optional<at::Tensor>& key_padding_mask,
                                     const std::optional<at::Tensor>& attn_mask, int64_t key_padding_mode,
                                     int64_t attn_mode, bool causal) {
  const char* op = "sparse_softmax";
  const Shape shape = scores_shape(scores, heads, seq, block, op);
  const Lut lut = check_lut(lut_tensor, shape, scores, op);
  check_blocks(scores, shape, lut, scores.scalar_type(), op, "scores");
  auto probs = at::empty_like(scores);
  const SoftmaxJob job = softmax_job(scores.data_ptr(), probs.data_ptr(), scores.scalar_type(), scores.device(), shape,
                                     scale, bias, key_padding_mask, attn_mask, key_padding_mode, attn_mode, causal, op);
  return {job, lut, shape, probs, shape.batch * heads * shape.blocks()};
}

inline Call<SoftmaxGradJob> softmax_grad_call(const at::Tensor& probs, const at::Tensor& grad,
                                              const at::Tensor& lut_tensor, int64_t heads, int64_t seq, int64_t block,
                                              double scale) {
  const char* op = "sparse_softmax_backward";
  const Shape shape = scores_shape(probs, heads, seq, block, op);
  const Lut lut = check_lut(lut_tensor, shape, probs, op);
  check_blocks(probs, shape, lut, probs.scalar_type(), op, "probs");
  check_blocks(grad, shape, lut, probs.scalar_type(), op, "grad");
  auto out = at::empty_like(probs);
  return {{probs.data_ptr(), grad.data_ptr(), out.data_ptr(), probs.scalar_type() == at::kDouble, scale}, lut, shape, out,
          shape.batch * heads * shape.blocks()};
}

// The fused attention (sparse_attention / sparse_attention_backward): q, k, v (and the
// gradient) alike, the table, and a softmax job with null scores (each row fills them in).
struct AttentionCall {
  Shape shape;
  Lut lut;
  SoftmaxJob softmax;
  at::ScalarType compute;  // of scores, masks and bias
};

inline AttentionCall attention_call(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& lut_tensor, int64_t block, double scale,
                                    const std::optional<at::Tensor>& bias,
                                    const std::optional<at::Tensor>& key_padding_mask,
                                    const std::optional<at::Tensor>& attn_mask, int64_t key_padding_mode,
                                    int64_t attn_mode, bool causal, const char* op) {
  const Shape shape = check_dense(q, op, "query", block);
  for (const auto& [t, name] : {std::pair{&k, "key"}, std::pair{&v, "value"}}) {
    check_dense(*t, op, name, block);
    TORCH_CHECK(t->sizes() == q.sizes() && t->scalar_type() == q.scalar_type() && t->device() == q.device(), op, ": ",
                name, " must have the query's shape, dtype and device, got ", t->sizes(), " ", t->scalar_type(),
                " and ", q.sizes(), " ", q.scalar_type());
  }
  const Lut lut = check_lut(lut_tensor, shape, q, op);
  const at::ScalarType compute = scores_type(q.scalar_type());
  return {shape, lut, softmax_job(nullptr, nullptr, compute, q.device(), shape, scale, bias, key_padding_mask,
                                  attn_mask, key_padding_mode, attn_mode, causal, op), compute};
}

}  // namespace ds::sparse_attention
