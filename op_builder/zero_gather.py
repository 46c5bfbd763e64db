"""ZeRO's flat-buffer copies: many tensors into one flat buffer and back, coalesced."""

from .builder import OpBuilder


class ZeroGatherBuilder(OpBuilder):
    NAME = "zero_gather"
    BUILD_VAR = "DS_BUILD_ZERO_GATHER"
    DESCRIPTION = "ZeRO flatten / unflatten and partition copies (OpenMP on CPU, batched CUDA kernel)"

    def sources(self) -> list[str]:
        return ["zero_gather/zero_gather_ops.cpp", "zero_gather/zero_gather_plan.cpp"]

    def cuda_sources(self) -> list[str]:
        return ["zero_gather/zero_gather_cuda.cpp", "zero_gather/zero_gather.cu"]

    def include_paths(self) -> list[str]:
        return ["include", "zero_gather"]
