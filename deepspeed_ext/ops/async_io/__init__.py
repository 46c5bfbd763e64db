"""Asynchronous direct file I/O (the async_io op), with DeepSpeed's handle:

    from deepspeed_ext.ops.op_builder import AsyncIOBuilder
    handle = AsyncIOBuilder().load().aio_handle(block_size=1048576, queue_depth=32)
    handle.sync_pwrite(tensor, "/nvme/x.bin"); handle.async_pread(tensor, "/nvme/x.bin"); handle.wait()
"""

from .handle import aio_handle

__all__ = ["aio_handle"]
