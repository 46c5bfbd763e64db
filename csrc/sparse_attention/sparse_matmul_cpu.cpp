// CPU impls of the block-sparse matmuls. Each work unit is one block row (SDD, DSD) or block
// column (transposed DSD) of one head: its blocks are gathered into one contiguous operand so
// the unit is a single BLAS matrix product, then scattered back into the layout's order. Units
// run across torch's intra-op threads (each product single-threaded inside them). bf16 / fp16
// operands are widened to fp32 (fp64 stays fp64) before the product.
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <torch/library.h>

#include "sparse_attention_calls.h"

namespace ds::sparse_attention {
namespace {

// One of the lut's int32 runs as an index tensor (no copy).
at::Tensor indices(const int32_t* first, int64_t count) {
  return at::from_blob(const_cast<int32_t*>(first), {count}, at::TensorOptions().dtype(at::kInt));
}

// (batch, heads, seq, dim) as (batch, heads, blocks, block, dim).
at::Tensor as_blocks(const at::Tensor& t, const Shape& shape) {
  return t.view({shape.batch, shape.heads, shape.blocks(), shape.block, shape.dim});
}

template <class Body>
void for_each_unit(const Shape& shape, Body body) {
  const int64_t blocks = shape.blocks();
  at::parallel_for(0, shape.batch * shape.heads * blocks, 1, [&](int64_t first, int64_t last) {
    const at::NoGradGuard no_grad;  // grad mode is per thread: the caller's guard does not reach here
    for (int64_t unit = first; unit < last; ++unit)
      body(unit / (shape.heads * blocks), (unit / blocks) % shape.heads, unit % blocks);
  });
}

at::Tensor sdd_cpu(const at::Tensor& a, const at::Tensor& b, const at::Tensor& lut_tensor, int64_t block) {
  const at::NoGradGuard no_grad;  // the op's autograd is registered around it; these are its internals
  auto call = sdd_call(a, b, lut_tensor, block);
  const Shape& shape = call.shape;
  const Lut& lut = call.lut;
  const auto compute = scores_type(a.scalar_type());
  const at::Tensor a_blocks = as_blocks(a, shape), b_blocks = as_blocks(b, shape);
  for_each_unit(shape, [&](int64_t batch, int64_t head, int64_t row) {
    const int32_t first = lut.row_ptr[head * shape.blocks() + row], last = lut.row_ptr[head * shape.blocks() + row + 1];
    const int64_t count = last - first;
    if (count == 0) return;
    // scores of the row = q_row (block x dim) . [k_c0; k_c1; ...]^T, then one block per column
    const at::Tensor keys = b_blocks[batch][head].index_select(0, indices(lut.cols + first, count)).to(compute);
    const at::Tensor product = at::mm(a_blocks[batch][head][row].to(compute), keys.view({count * block, shape.dim}).t());
    call.out[batch].narrow(0, first, count).copy_(product.view({block, count, block}).permute({1, 0, 2}));
  });
  return call.out;
}

at::Tensor dsd_cpu(const at::Tensor& s, const at::Tensor& v, const at::Tensor& lut_tensor, int64_t block,
                   bool transpose) {
  const at::NoGradGuard no_grad;
  auto call = dsd_call(s, v, lut_tensor, block, transpose);
  const Shape& shape = call.shape;
  const Lut& lut = call.lut;
  const auto compute = scores_type(v.scalar_type());
  const at::Tensor v_blocks = as_blocks(v, shape), out_blocks = as_blocks(call.out, shape);
  const at::Tensor all_rows = indices(lut.rows, lut.nnz), all_cols = indices(lut.cols, lut.nnz);
  const int32_t* pointers = transpose ? lut.col_ptr : lut.row_ptr;
  for_each_unit(shape, [&](int64_t batch, int64_t head, int64_t block_index) {
    const int32_t first = pointers[head * shape.blocks() + block_index];
    const int64_t count = pointers[head * shape.blocks() + block_index + 1] - first;
    const at::Tensor target = out_blocks[batch][head][block_index];
    if (count == 0) {
      target.zero_();
      return;
    }
    at::Tensor weights, others;
    if (transpose) {  // out_c = sum over r of s_rc^T v_r: weights[j, m * block + i] = s_m[i, j]
      const at::Tensor ids = indices(lut.by_col + first, count);
      weights = s[batch].index_select(0, ids).permute({2, 0, 1});
      others = all_rows.index_select(0, ids);
    } else {  // out_r = sum over c of s_rc v_c: weights[i, m * block + j] = s_m[i, j]
      weights = s[batch].narrow(0, first, count).permute({1, 0, 2});
      others = all_cols.narrow(0, first, count);
    }
    const at::Tensor values = v_blocks[batch][head].index_select(0, others).to(compute);
    target.copy_(at::mm(weights.reshape({block, count * block}), values.view({count * block, shape.dim})));
  });
  return call.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(deepspeed_ext, CPU, m) {
  m.impl("sparse_sdd", &sdd_cpu);
  m.impl("sparse_dsd", &dsd_cpu);
}

}  // namespace ds::sparse_attention
