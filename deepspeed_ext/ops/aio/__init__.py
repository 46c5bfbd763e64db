"""DeepSpeed's module path for the aio handle, which lives in the async_io op."""

from deepspeed_ext.ops.async_io import aio_handle

__all__ = ["aio_handle"]
