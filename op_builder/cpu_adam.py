"""CPU Adam, Adagrad and Lion: one library of SIMD kernels for the three CPU optimizers."""

from .builder import OpBuilder

# The SIMD kernels of the CPU optimizers and their torch-side dispatch; fused_adam's CPU
# path runs them too.
CPU_OPTIMIZER_SOURCES = [
    "adam/cpu_optimizer_dispatch.cpp",
    "adam/cpu_optimizer_scalar.cpp",
    "adam/cpu_optimizer_avx2.cpp",
    "adam/cpu_optimizer_avx512.cpp",
]


class CPUAdamBuilder(OpBuilder):
    NAME = "cpu_adam"
    BUILD_VAR = "DS_BUILD_CPU_ADAM"
    DESCRIPTION = "CPU Adam / Adagrad / Lion (AVX-512, AVX2, scalar; OpenMP)"

    def sources(self) -> list[str]:
        return ["adam/cpu_optimizer_ops.cpp", *CPU_OPTIMIZER_SOURCES]

    def include_paths(self) -> list[str]:
        return ["include", "adam"]
