"""Mixture-of-Experts token dispatch and combine (deepspeed_ext.moe's expert buffers)."""

from .builder import OpBuilder


class MoEBuilder(OpBuilder):
    NAME = "moe"
    BUILD_VAR = "DS_BUILD_MOE"
    DESCRIPTION = "MoE token dispatch / combine and gate-weight gradients (AVX-512, AVX2, scalar; OpenMP; CUDA kernel)"

    def sources(self) -> list[str]:
        return ["moe/moe_ops.cpp", "moe/moe_scalar.cpp", "moe/moe_avx2.cpp", "moe/moe_avx512.cpp"]

    def cuda_sources(self) -> list[str]:
        return ["moe/moe_cuda.cpp", "moe/moe.cu"]

    def include_paths(self) -> list[str]:
        return ["include", "moe"]
