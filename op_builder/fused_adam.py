"""Fused multi-tensor Adam: a CUDA kernel where torch has CUDA, the CPU optimizer kernels elsewhere."""

from .builder import OpBuilder
from .cpu_adam import CPU_ADAM_SOURCES


class FusedAdamBuilder(OpBuilder):
    NAME = "fused_adam"
    BUILD_VAR = "DS_BUILD_FUSED_ADAM"
    DESCRIPTION = "multi-tensor Adam (CUDA multi-tensor apply; CPU SIMD kernels)"

    def sources(self) -> list[str]:
        return ["fused_adam/fused_adam_ops.cpp", *CPU_ADAM_SOURCES]

    def cuda_sources(self) -> list[str]:
        return ["fused_adam/fused_adam_cuda.cpp", "fused_adam/fused_adam.cu"]

    def include_paths(self) -> list[str]:
        return ["include", "cpu_adam", "fused_adam"]
