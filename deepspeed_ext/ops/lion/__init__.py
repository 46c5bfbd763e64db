"""DeepSpeed's module path for DeepSpeedCPULion, which lives in the cpu_adam op."""

from deepspeed_ext.ops.cpu_adam import DeepSpeedCPULion

__all__ = ["DeepSpeedCPULion"]
