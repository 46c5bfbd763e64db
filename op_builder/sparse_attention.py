"""Block-sparse attention: SDD / DSD matmuls and block-sparse softmax, with their backward."""

from .builder import OpBuilder


class SparseAttentionBuilder(OpBuilder):
    NAME = "sparse_attention"
    BUILD_VAR = "DS_BUILD_SPARSE_ATTN"
    DESCRIPTION = ("block-sparse attention (SDD, DSD, softmax and backward, and all three fused; AVX-512, AVX2, "
                   "scalar; OpenMP; CUDA)")

    def sources(self) -> list[str]:
        return ["sparse_attention/sparse_attention_ops.cpp", "sparse_attention/sparse_matmul_cpu.cpp",
                "sparse_attention/sparse_attention_fused_cpu.cpp",
                "sparse_attention/sparse_attention_scalar.cpp",
                "sparse_attention/sparse_attention_avx2.cpp", "sparse_attention/sparse_attention_avx512.cpp"]

    def cuda_sources(self) -> list[str]:
        return ["sparse_attention/sparse_attention_cuda.cpp", "sparse_attention/sparse_attention.cu"]

    def include_paths(self) -> list[str]:
        return ["include", "sparse_attention"]


# DeepSpeed's name for this builder, which users import.
SparseAttnBuilder = SparseAttentionBuilder
