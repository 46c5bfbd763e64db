// CPU impl of the fused block-sparse attention (sparse_attention and its backward): one block
// row at a time, its scores live only in a per-thread buffer that stays in cache, instead of
// (batch, nnz, block, block) tensors written to and read back from memory between the ops.
//   forward, per (batch, head, block row r):  S = q_r K^T, P = softmax(S), out_r = P V
//   backward, per (batch, head), row by row:  S and P again, dP = g_r V^T, dS = softmax'(P, dP),
//     dq_r = dS K, dk_c += dS_c^T q_r, dv_c += P_c^T g_r
// where K and V stack the row's nonzero column blocks of k and v. Backward units are whole
// heads so each owns its dk / dv; forward units are block rows. Products are BLAS calls on
// raw pointers (cpu_blas.h); the softmax is the SIMD levels' row kernel
// (sparse_attention_kernels.inc), the same arithmetic as sparse_softmax.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <tuple>

#include "cpu_blas.h"
#include "simd_level_check.h"
#include "sparse_attention_calls.h"

namespace ds::sparse_attention {
namespace {

struct RowKernels {
  decltype(&scalar::softmax_row) softmax;
  decltype(&scalar::softmax_grad_row) softmax_grad;
};

RowKernels row_kernels() {
  const SimdLevel level = checked_simd_level();
#if DS_SIMD_X86
  if (level == SimdLevel::avx512) return {avx512::softmax_row, avx512::softmax_grad_row};
  if (level == SimdLevel::avx2) return {avx2::softmax_row, avx2::softmax_grad_row};
#endif
  (void)level;
  return {scalar::softmax_row, scalar::softmax_grad_row};
}

// One call's inputs in the compute type, and what every row needs to find its blocks.
template <class T>
struct Attention {
  const AttentionCall& call;
  RowKernels kernels;
  const T *q, *k, *v;
  int64_t bs, dim, blocks, longest;  // longest: most nonzero blocks in a block row

  Attention(const AttentionCall& c, const at::Tensor& q32, const at::Tensor& k32, const at::Tensor& v32)
      : call(c), kernels(row_kernels()), q(q32.data_ptr<T>()), k(k32.data_ptr<T>()), v(v32.data_ptr<T>()),
        bs(c.shape.block), dim(c.shape.dim), blocks(c.shape.blocks()), longest(0) {
    for (int64_t hr = 0; hr < c.shape.heads * blocks; ++hr)
      longest = std::max<int64_t>(longest, c.lut.row_ptr[hr + 1] - c.lut.row_ptr[hr]);
  }

  // Offset of block `index` of (batch, head) in a (batch, heads, seq, dim) tensor.
  int64_t block_at(int64_t batch_head, int64_t index) const { return (batch_head * blocks + index) * bs * dim; }
  const int32_t* columns(int64_t unit) const { return call.lut.cols + call.lut.row_ptr[unit % (call.shape.heads * blocks)]; }
  int64_t count(int64_t unit) const {
    const int64_t head_row = unit % (call.shape.heads * blocks);
    return call.lut.row_ptr[head_row + 1] - call.lut.row_ptr[head_row];
  }
};

// One thread's buffers, sized for the longest block row and reused for every row it runs:
// fresh buffers would be page-faulted in row after row.
template <class T>
struct RowBuffers {
  std::unique_ptr<T[]> keys, values, projected, scores, grads;

  explicit RowBuffers(const Attention<T>& a)
      : keys(new T[a.longest * a.bs * a.dim]), values(new T[a.longest * a.bs * a.dim]),
        projected(new T[a.longest * a.bs * a.dim]), scores(new T[a.bs * a.longest * a.bs]),
        grads(new T[a.bs * a.longest * a.bs]) {}
};

// The row's column blocks of one head of `source`, stacked into `stacked` (count * bs, dim).
template <class T>
void gather(const Attention<T>& a, const T* source, int64_t batch_head, int64_t unit, T* stacked) {
  const int32_t* columns = a.columns(unit);
  for (int64_t m = 0; m < a.count(unit); ++m)
    std::memcpy(stacked + m * a.bs * a.dim, source + a.block_at(batch_head, columns[m]), sizeof(T) * a.bs * a.dim);
}

// target's column blocks += the stacked blocks.
template <class T>
void scatter_add(const Attention<T>& a, const T* stacked, int64_t batch_head, int64_t unit, T* target) {
  const int32_t* columns = a.columns(unit);
  for (int64_t m = 0; m < a.count(unit); ++m) {
    T* to = target + a.block_at(batch_head, columns[m]);
    const T* from = stacked + m * a.bs * a.dim;
    for (int64_t e = 0; e < a.bs * a.dim; ++e) to[e] += from[e];
  }
}

// P = softmax(q_r K^T) of one block row into `scores` (bs, count * bs); K already gathered.
template <class T>
void row_probabilities(const Attention<T>& a, int64_t unit, const T* keys, T* scores) {
  const int64_t count = a.count(unit), width = count * a.bs;
  gemm<T>(false, true, a.bs, width, a.dim, T(1), a.q + unit * a.bs * a.dim, a.dim, keys, a.dim, T(0), scores, width);
  SoftmaxJob job = a.call.softmax;
  job.scores = job.probs = scores;
  a.kernels.softmax(job, a.call.lut, a.call.shape, unit, RowLayout::of_matrix(a.bs, count));
}

template <class T>
void forward_rows(const Attention<T>& a, T* out, int64_t first, int64_t last) {
  RowBuffers<T> buffers(a);
  for (int64_t unit = first; unit < last; ++unit) {
    const int64_t batch_head = unit / a.blocks, count = a.count(unit), width = count * a.bs;
    T* out_rows = out + unit * a.bs * a.dim;
    if (count == 0) {
      std::fill(out_rows, out_rows + a.bs * a.dim, T(0));
      continue;
    }
    gather(a, a.k, batch_head, unit, buffers.keys.get());
    row_probabilities(a, unit, buffers.keys.get(), buffers.scores.get());
    gather(a, a.v, batch_head, unit, buffers.values.get());
    gemm<T>(false, false, a.bs, a.dim, width, T(1), buffers.scores.get(), width, buffers.values.get(), a.dim, T(0),
            out_rows, a.dim);
  }
}

template <class T>
void backward_heads(const Attention<T>& a, const T* grad, T* dq, T* dk, T* dv, int64_t first, int64_t last) {
  RowBuffers<T> buffers(a);
  T *keys = buffers.keys.get(), *values = buffers.values.get(), *projected = buffers.projected.get();
  T *probs = buffers.scores.get(), *score_grads = buffers.grads.get();
  for (int64_t batch_head = first; batch_head < last; ++batch_head) {
    for (int64_t unit = batch_head * a.blocks; unit < (batch_head + 1) * a.blocks; ++unit) {
      const int64_t count = a.count(unit), width = count * a.bs, rows_at = unit * a.bs * a.dim;
      if (count == 0) {
        std::fill(dq + rows_at, dq + rows_at + a.bs * a.dim, T(0));
        continue;
      }
      gather(a, a.k, batch_head, unit, keys);
      gather(a, a.v, batch_head, unit, values);
      row_probabilities(a, unit, keys, probs);
      gemm<T>(false, true, a.bs, width, a.dim, T(1), grad + rows_at, a.dim, values, a.dim, T(0), score_grads, width);
      const SoftmaxGradJob job{probs, score_grads, score_grads, a.call.compute == at::kDouble, a.call.softmax.scale};
      a.kernels.softmax_grad(job, a.call.lut, a.call.shape, unit, RowLayout::of_matrix(a.bs, count));
      gemm<T>(false, false, a.bs, a.dim, width, T(1), score_grads, width, keys, a.dim, T(0), dq + rows_at, a.dim);
      gemm<T>(true, false, width, a.dim, a.bs, T(1), score_grads, width, a.q + rows_at, a.dim, T(0), projected, a.dim);
      scatter_add(a, projected, batch_head, unit, dk);
      gemm<T>(true, false, width, a.dim, a.bs, T(1), probs, width, grad + rows_at, a.dim, T(0), projected, a.dim);
      scatter_add(a, projected, batch_head, unit, dv);
    }
  }
}

at::Tensor attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& lut,
                         int64_t block, double scale, const std::optional<at::Tensor>& rpe,
                         const std::optional<at::Tensor>& key_padding_mask, const std::optional<at::Tensor>& attn_mask,
                         int64_t key_padding_mode, int64_t attn_mode, bool causal) {
  const at::NoGradGuard no_grad;  // the op's autograd is registered around it; these are its internals
  const AttentionCall call = attention_call(q, k, v, lut, block, scale, rpe, key_padding_mask, attn_mask,
                                            key_padding_mode, attn_mode, causal, "sparse_attention");
  const at::Tensor q32 = q.to(call.compute), k32 = k.to(call.compute), v32 = v.to(call.compute);
  at::Tensor out = at::empty(q.sizes(), q.options().dtype(call.compute));
  const int64_t units = call.shape.batch * call.shape.heads * call.shape.blocks();
  AT_DISPATCH_FLOATING_TYPES(call.compute, "sparse_attention", [&] {
    const Attention<scalar_t> attention(call, q32, k32, v32);
    at::parallel_for(0, units, 1, [&](int64_t first, int64_t last) {
      forward_rows(attention, out.data_ptr<scalar_t>(), first, last);
    });
  });
  return out.to(q.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_cpu(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& lut,
    int64_t block, double scale, const std::optional<at::Tensor>& rpe, const std::optional<at::Tensor>& key_padding_mask,
    const std::optional<at::Tensor>& attn_mask, int64_t key_padding_mode, int64_t attn_mode, bool causal) {
  const at::NoGradGuard no_grad;
  const char* op = "sparse_attention_backward";
  const AttentionCall call = attention_call(q, k, v, lut, block, scale, rpe, key_padding_mask, attn_mask,
                                            key_padding_mode, attn_mode, causal, op);
  TORCH_CHECK(grad.sizes() == q.sizes(), op, ": grad must have the query's shape ", q.sizes(), ", got ", grad.sizes());
  const at::Tensor q32 = q.to(call.compute), k32 = k.to(call.compute), v32 = v.to(call.compute);
  const at::Tensor g32 = grad.to(call.compute).contiguous();
  const auto options = q.options().dtype(call.compute);
  at::Tensor dq = at::empty(q.sizes(), options), dk = at::zeros(q.sizes(), options), dv = at::zeros(q.sizes(), options);
  AT_DISPATCH_FLOATING_TYPES(call.compute, "sparse_attention_backward", [&] {
    const Attention<scalar_t> attention(call, q32, k32, v32);
    at::parallel_for(0, call.shape.batch * call.shape.heads, 1, [&](int64_t first, int64_t last) {
      backward_heads(attention, g32.data_ptr<scalar_t>(), dq.data_ptr<scalar_t>(), dk.data_ptr<scalar_t>(),
                     dv.data_ptr<scalar_t>(), first, last);
    });
  });
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(deepspeed_ext, CPU, m) {
  m.impl("sparse_attention", &attention_cpu);
  m.impl("sparse_attention_backward", &attention_backward_cpu);
}

}  // namespace ds::sparse_attention
