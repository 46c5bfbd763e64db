from deepspeed_ext.runtime.nested import move_to_device

__all__ = ["move_to_device"]
