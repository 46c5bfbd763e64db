"""Fused multi-tensor Adam: a CUDA kernel where torch has CUDA, the CPU optimizer kernels elsewhere."""

from .builder import OpBuilder
from .cpu_adam import CPU_OPTIMIZER_SOURCES


class FusedAdamBuilder(OpBuilder):
    NAME = "fused_adam"
    BUILD_VAR = "DS_BUILD_FUSED_ADAM"
    DESCRIPTION = "multi-tensor Adam (CUDA multi-tensor apply; CPU SIMD kernels)"

    def sources(self) -> list[str]:
        return ["adam/fused_adam_ops.cpp", *CPU_OPTIMIZER_SOURCES]

    def cuda_sources(self) -> list[str]:
        return ["adam/fused_adam_cuda.cpp", "adam/fused_adam.cu"]

    def include_paths(self) -> list[str]:
        return ["include", "adam"]
