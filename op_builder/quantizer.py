"""Group-wise int8 / int4 quantize and dequantize (ZeRO++ communication, int8 inference)."""

from .builder import OpBuilder


class QuantizerBuilder(OpBuilder):
    NAME = "quantizer"
    BUILD_VAR = "DS_BUILD_QUANTIZER"
    DESCRIPTION = "group-wise int8 / int4 quantizer (AVX-512, AVX2, scalar; OpenMP; CUDA kernel)"

    def sources(self) -> list[str]:
        return ["quantizer/quantizer_ops.cpp", "quantizer/quantizer_scalar.cpp", "quantizer/quantizer_avx2.cpp",
                "quantizer/quantizer_avx512.cpp"]

    def cuda_sources(self) -> list[str]:
        return ["quantizer/quantizer_cuda.cpp", "quantizer/quantizer.cu"]

    def include_paths(self) -> list[str]:
        return ["include", "quantizer"]
