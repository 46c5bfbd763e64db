from deepspeed_ext.ops.aio import aio_handle

__all__ = ["aio_handle"]
