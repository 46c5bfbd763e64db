// The sparse attention op library: schemas, and the CPU softmax impls (block rows split across
// torch's intra-op threads, each range run at the SIMD level DS_SIMD and the CPU allow); the
// CPU matmuls are in sparse_matmul_cpu.cpp.
//   sparse_sdd(a, b, lut, block)                 -> scores (batch, nnz, block, block), fp32
//   sparse_dsd(s, v, lut, block, transpose)      -> (batch, heads, seq, dim) in v's dtype
//   sparse_softmax(scores, lut, heads, seq, block, scale, rpe, masks, modes, causal) -> probabilities
//   sparse_softmax_backward(probs, grad, lut, heads, seq, block, scale) -> d loss / d scores
//   sparse_attention(q, k, v, lut, block, scale, rpe, masks, modes, causal) -> the three above in
//     one pass, scores never stored (sparse_attention_fused_cpu.cpp); sparse_attention_backward
//     recomputes them and returns (dq, dk, dv)
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "simd_level_check.h"
#include "sparse_attention_calls.h"

namespace ds::sparse_attention {
namespace {

// The kernel of `call`'s job at the SIMD level DS_SIMD and the CPU allow, over all work units.
#if DS_SIMD_X86
#define DS_RUN_LEVELS(kernel)                                                                     \
  if (level == SimdLevel::avx512) return avx512::kernel(call.job, call.lut, call.shape, first, last); \
  if (level == SimdLevel::avx2) return avx2::kernel(call.job, call.lut, call.shape, first, last);
#else
#define DS_RUN_LEVELS(kernel)
#endif
#define DS_RUN_CPU(call_expression, kernel)                                                       \
  auto call = call_expression;                                                                    \
  const SimdLevel level = checked_simd_level();                                                   \
  at::parallel_for(0, call.units, 1, [&](int64_t first, int64_t last) {                           \
    DS_RUN_LEVELS(kernel)                                                                         \
    scalar::kernel(call.job, call.lut, call.shape, first, last);                                  \
  });                                                                                             \
  return call.out;

at::Tensor softmax_cpu(const at::Tensor& scores, const at::Tensor& lut, int64_t heads, int64_t seq, int64_t block,
                       double scale, const std::optional<at::Tensor>& rpe,
                       const std::optional<at::Tensor>& key_padding_mask, const std::optional<at::Tensor>& attn_mask,
                       int64_t key_padding_mode, int64_t attn_mode, bool causal) {
  DS_RUN_CPU(softmax_call(scores, lut, heads, seq, block, scale, rpe, key_padding_mask, attn_mask, key_padding_mode,
                          attn_mode, causal), softmax)
}

at::Tensor softmax_backward_cpu(const at::Tensor& probs, const at::Tensor& grad, const at::Tensor& lut, int64_t heads,
                                int64_t seq, int64_t block, double scale) {
  DS_RUN_CPU(softmax_grad_call(probs, grad, lut, heads, seq, block, scale), softmax_grad)
}

std::string sparse_attention_simd_level() { return simd_level_name(checked_simd_level()); }

}  // namespace

TORCH_LIBRARY_FRAGMENT(deepspeed_ext, m) {
  m.def("sparse_sdd(Tensor a, Tensor b, Tensor lut, int block) -> Tensor");
  m.def("sparse_dsd(Tensor s, Tensor v, Tensor lut, int block, bool transpose) -> Tensor");
  m.def("sparse_softmax(Tensor scores, Tensor lut, int heads, int seq, int block, float scale, Tensor? rpe, "
        "Tensor? key_padding_mask, Tensor? attn_mask, int key_padding_mode, int attn_mode, bool causal) -> Tensor");
  m.def("sparse_softmax_backward(Tensor probs, Tensor grad, Tensor lut, int heads, int seq, int block, "
        "float scale) -> Tensor");
  m.def("sparse_attention(Tensor q, Tensor k, Tensor v, Tensor lut, int block, float scale, Tensor? rpe, "
        "Tensor? key_padding_mask, Tensor? attn_mask, int key_padding_mode, int attn_mode, bool causal) -> Tensor");
  m.def("sparse_attention_backward(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor lut, int block, float scale, "
        "Tensor? rpe, Tensor? key_padding_mask, Tensor? attn_mask, int key_padding_mode, int attn_mode, bool causal) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("sparse_attention_simd_level() -> str", &sparse_attention_simd_level);
}

TORCH_LIBRARY_IMPL(deepspeed_ext, CPU, m) {
  m.impl("sparse_softmax", &softmax_cpu);
  m.impl("sparse_softmax_backward", &softmax_backward_cpu);
}

}  // namespace ds::sparse_attention
