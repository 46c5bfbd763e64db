from deepspeed_ext.ops.lion import DeepSpeedCPULion

__all__ = ["DeepSpeedCPULion"]
