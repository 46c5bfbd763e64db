"""DeepSpeed's module path for DeepSpeedCPUAdagrad, which lives in the cpu_adam op."""

from deepspeed_ext.ops.cpu_adam import DeepSpeedCPUAdagrad

__all__ = ["DeepSpeedCPUAdagrad"]
