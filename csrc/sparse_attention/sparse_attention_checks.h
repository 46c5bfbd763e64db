#pragma once
// Input checks shared by the CPU and CUDA impls of the sparse attention ops: every assumption
// the kernels make, as an error that names the argument.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "sparse_attention.h"

namespace ds::sparse_attention {

inline DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::f32;
    case at::kDouble: return DType::f64;
    case at::kBFloat16: return DType::bf16;
    default: return DType::f16;
  }
}

// Scores and probabilities: fp64 for fp64 inputs, else fp32.
inline at::ScalarType scores_type(at::ScalarType input) { return input == at::kDouble ? at::kDouble : at::kFloat; }

// Softmax rows are summed in 16 partial sums (sparse_attention_kernels.inc): a block is either
// at most 16 wide or a whole number of 16s (DeepSpeed's 16, 32, 64, 128 all are).
inline void check_block_size(int64_t block, const char* op) {
  TORCH_CHECK(block > 0 && (block <= 16 || block % 16 == 0), op, ": block size ", block,
              " must be at most 16 or a multiple of 16 (16, 32, 64, 128)");
}

// q / k / v style: (batch, heads, seq, dim), contiguous, a float dtype, seq a multiple of block.
inline Shape check_dense(const at::Tensor& t, const char* op, const char* name, int64_t block) {
  TORCH_CHECK(t.dim() == 4, op, ": ", name, " must be (batch, heads, seq, head_dim), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf ||
                  t.scalar_type() == at::kDouble,
              op, ": ", name, " must be float32, bfloat16, float16 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
  TORCH_CHECK(block > 0 && t.size(2) % block == 0, op, ": sequence length ", t.size(2), " of ", name,
              " is not a multiple of the block size ", block, "; pad it with SparseAttentionUtils.pad_to_block_size");
  check_block_size(block, op);
  return {t.size(0), t.size(1), t.size(2), t.size(3), block};
}

inline Lut check_lut(const at::Tensor& lut, const Shape& shape, const at::Tensor& like, const char* op) {
  TORCH_CHECK(lut.scalar_type() == at::kInt && lut.dim() == 1 && lut.is_contiguous() && lut.device() == like.device(),
              op, ": lut must be a contiguous int32 vector on ", like.device(), " (made by the layout's look-up table)");
  const int64_t pointers = shape.heads * shape.blocks() + 1;
  TORCH_CHECK(lut.numel() >= 2 * pointers && (lut.numel() - 2 * pointers) % 4 == 0, op, ": the look-up table is for ",
              "another number of heads or blocks than the inputs (", shape.heads, " heads, ", shape.blocks(),
              " blocks); rebuild the layout for this sequence length and head count");
  const int32_t* base = lut.data_ptr<int32_t>();
  const int64_t nnz = (lut.numel() - 2 * pointers) / 4;
  // On the CPU the table can be read cheaply: both pointer arrays must end at nnz.
  TORCH_CHECK(!lut.device().is_cpu() || (base[pointers - 1] == nnz && base[2 * pointers - 1] == nnz), op,
              ": the look-up table is for another number of heads or blocks than the inputs (", shape.heads,
              " heads, ", shape.blocks(), " blocks); rebuild the layout for this sequence length and head count");
  return {base, base + pointers, base + 2 * pointers, base + 2 * pointers + nnz, base + 2 * pointers + 2 * nnz,
          base + 2 * pointers + 3 * nnz, nnz};
}

// Scores-shaped: (batch, nnz, block, block) of `type` (fp32, or fp64 for fp64 inputs).
inline void check_blocks(const at::Tensor& t, const Shape& shape, const Lut& lut, at::ScalarType type, const char* op,
                         const char* name) {
  TORCH_CHECK(t.scalar_type() == type && t.is_contiguous() && t.dim() == 4 && t.size(0) == shape.batch &&
                  t.size(1) == lut.nnz && t.size(2) == shape.block && t.size(3) == shape.block,
              op, ": ", name, " must be a contiguous ", type, " (batch, nonzero blocks, block, block) tensor (",
              shape.batch, ", ", lut.nnz, ", ", shape.block, ", ", shape.block, "), got ", t.scalar_type(), " ",
              t.sizes());
}

// A bias or mask: the scores' dtype `type`, the given shape, on `device`, or absent.
inline const void* optional_input(const std::optional<at::Tensor>& t, at::IntArrayRef sizes, const char* op,
                                  const char* name, at::ScalarType type, at::Device device) {
  if (!t.has_value()) return nullptr;
  TORCH_CHECK(t->scalar_type() == type && t->is_contiguous() && t->sizes() == sizes && t->device() == device, op, ": ",
              name, " must be a contiguous ", type, " tensor of shape ", sizes, " on ", device, ", got ",
              t->scalar_type(), " ", t->sizes(), " on ", t->device());
  return t->data_ptr();
}

inline void check_mode(int64_t mode, const char* op, const char* name) {
  TORCH_CHECK(mode >= 0 && mode <= 2, op, ": ", name, " must be 0 (none), 1 (add) or 2 (mul), got ", mode);
}

}  // namespace ds::sparse_attention
