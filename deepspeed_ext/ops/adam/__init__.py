"""DeepSpeed's module path for its Adam optimizers; they live in the cpu_adam and fused_adam ops."""

from deepspeed_ext.ops.cpu_adam import DeepSpeedCPUAdagrad, DeepSpeedCPUAdam, DeepSpeedCPULion
from deepspeed_ext.ops.fused_adam import FusedAdam

__all__ = ["DeepSpeedCPUAdagrad", "DeepSpeedCPUAdam", "DeepSpeedCPULion", "FusedAdam"]
