"""CPU Adam, Adagrad and Lion: one library of SIMD kernels for the three CPU optimizers."""

from .builder import OpBuilder

# The SIMD kernels of the CPU optimizers and their torch-side dispatch; fused_adam's CPU
# path runs them too.
CPU_ADAM_SOURCES = [
    "cpu_adam/cpu_adam_dispatch.cpp",
    "cpu_adam/cpu_adam_scalar.cpp",
    "cpu_adam/cpu_adam_avx2.cpp",
    "cpu_adam/cpu_adam_avx512.cpp",
]


class CPUAdamBuilder(OpBuilder):
    NAME = "cpu_adam"
    BUILD_VAR = "DS_BUILD_CPU_ADAM"
    DESCRIPTION = "CPU Adam / Adagrad / Lion (AVX-512, AVX2, scalar; OpenMP)"

    def sources(self) -> list[str]:
        return ["cpu_adam/cpu_adam_ops.cpp", *CPU_ADAM_SOURCES]

    def include_paths(self) -> list[str]:
        return ["include", "cpu_adam"]
