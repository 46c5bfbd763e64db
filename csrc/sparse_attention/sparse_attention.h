#pragma once
// Block-sparse attention kernels: what the CPU softmax levels (sparse_attention_<level>.cpp) and
// the CUDA file (every kernel) get from the torch-facing code, torch-free.
//
// The layout's look-up table (built once per layout in Python, see
// deepspeed_ext/ops/sparse_attention/lut.py) is one int32 tensor, concatenated:
//   row_ptr[heads * blocks + 1]  nonzero blocks of (head, block row) are row_ptr[hr] .. row_ptr[hr + 1)
//   col_ptr[heads * blocks + 1]  the same by (head, block column), indexing by_col
//   rows[nnz], cols[nnz], heads[nnz]   each nonzero block, ordered by (head, row, column)
//   by_col[nnz]                  nonzero indices ordered by (head, column, row)
#include <cstdint>

#include "ds_inline.h"

namespace ds::sparse_attention {

// Inputs in fp32 / bf16 / fp16 are computed in fp32 with fp32 scores; fp64 inputs (gradcheck)
// are computed in fp64 with fp64 scores.
enum class DType : int { f32, bf16, f16, f64 };

struct Lut {
  const int32_t* row_ptr;
  const int32_t* col_ptr;
  const int32_t* rows;
  const int32_t* cols;
  const int32_t* heads;
  const int32_t* by_col;
  int64_t nnz;
};

struct Shape {
  int64_t batch, heads, seq, dim, block;
  DS_INLINE int64_t blocks() const { return seq / block; }
};

// scores[b, n] = a[b, h(n), row block] . b[b, h(n), column block]^T
struct SddJob {
  const void* a;
  const void* b;
  DType dtype;  // of a and b
  void* out;    // (batch, nnz, block, block) scores
};

// transpose = false: out[b, h, row block r] = sum over nonzeros (r, c) of s[b, n] . v[b, h, block c]
// transpose = true:  out[b, h, column block c] = sum over nonzeros (r, c) of s[b, n]^T . v[b, h, block r]
struct DsdJob {
  const void* s;  // (batch, nnz, block, block) scores
  const void* v;
  DType dtype;  // of v and out
  void* out;    // (batch, heads, seq, dim)
  bool transpose;
};

// Where one block row's scores sit: element (query i of the row, the row's m-th nonzero block,
// key j of that block) is at i * row_stride + m * block_stride + j. The ops' (batch, nnz,
// block, block) tensors hold blocks one after another; the fused attention's per-row buffer
// holds the row as one (block, count * block) matrix.
struct RowLayout {
  int64_t row_stride, block_stride;
  static RowLayout of_blocks(int64_t block) { return {block, block * block}; }
  static RowLayout of_matrix(int64_t block, int64_t count) { return {count * block, block}; }
  DS_INLINE int64_t at(int64_t i, int64_t m) const { return i * row_stride + m * block_stride; }
};

// Every pointer here is of the scores' type (fp64 when `f64`, else fp32).
struct SoftmaxJob {
  const void* scores;  // (batch, nnz, block, block)
  void* probs;         // the same shape
  bool f64;
  double scale;
  const void* bias;         // relative position bias (heads, seq, seq), or null
  const void* key_padding;  // (batch, seq), or null
  int key_padding_mode;
  const void* attention;  // (seq, seq), or null
  int attention_mode;
  bool causal;
  void shift(int64_t bytes) {  // scores and probs, moved on by the same offset
    scores = static_cast<const char*>(scores) + bytes;
    probs = static_cast<char*>(probs) + bytes;
  }
};

struct SoftmaxGradJob {
  const void* probs;
  const void* grad;  // d loss / d probs
  void* out;         // d loss / d scores
  bool f64;
  double scale;
  void shift(int64_t bytes) {
    probs = static_cast<const char*>(probs) + bytes;
    grad = static_cast<const char*>(grad) + bytes;
    out = static_cast<char*>(out) + bytes;
  }
};

// The CPU softmax kernels per SIMD level: over block rows [first, last) of batch x heads in
// the ops' layout, or (the fused attention) one block row `unit` whose pointers point at
// that row, laid out as `layout` says. The kernels are safe in place (probs == scores, out == grad).
#define DS_SPARSE_ATTENTION_KERNELS(level)                                                                  \
  namespace level {                                                                                         \
  void softmax(const SoftmaxJob& job, const Lut& lut, const Shape& shape, int64_t first, int64_t last);    \
  void softmax_grad(const SoftmaxGradJob& job, const Lut& lut, const Shape& shape, int64_t first, int64_t last); \
  void softmax_row(const SoftmaxJob& job, const Lut& lut, const Shape& shape, int64_t unit, RowLayout layout); \
  void softmax_grad_row(const SoftmaxGradJob& job, const Lut& lut, const Shape& shape, int64_t unit,        \
                        RowLayout layout);                                                                  \
  }
DS_SPARSE_ATTENTION_KERNELS(scalar)
DS_SPARSE_ATTENTION_KERNELS(avx2)
DS_SPARSE_ATTENTION_KERNELS(avx512)
#undef DS_SPARSE_ATTENTION_KERNELS

}  // namespace ds::sparse_attention
