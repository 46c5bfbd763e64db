"""The CPU optimizers of the cpu_adam op: Adam / AdamW, Adagrad and Lion steps on CPU params
in one SIMD + OpenMP pass per param (DeepSpeed's names; also importable from
deepspeed_ext.ops.adam, .adagrad and .lion, DeepSpeed's module paths)."""

from .cpu_adagrad import DeepSpeedCPUAdagrad
from .cpu_adam import DeepSpeedCPUAdam
from .cpu_lion import DeepSpeedCPULion
from .cpu_optimizer import CPUOptimizer

__all__ = ["CPUOptimizer", "DeepSpeedCPUAdagrad", "DeepSpeedCPUAdam", "DeepSpeedCPULion"]
