"""DeepSpeed's aio_handle on the C++ AioHandle (torch.classes.deepspeed_ext.AioHandle): keyword
arguments and defaults, the sync_ / async_ names, and I/O failures as OSError with the errno."""

from __future__ import annotations

import functools
import operator
import os
import re

import torch

from deepspeed_ext.ops.op_builder import AsyncIOBuilder

_ERRNO = re.compile(r"\(errno (\d+)\)")


@functools.cache
def _handle_class():
    AsyncIOBuilder().load()
    return torch.classes.deepspeed_ext.AioHandle


def _io(call, *args) -> int:
    """Runs a handle call; a failure that carries an errno becomes an OSError with it."""
    try:
        return call(*args)
    except RuntimeError as error:
        message = str(error).splitlines()[0]
        found = _ERRNO.search(message)
        if found is None:
            raise
        raise OSError(int(found[1]), message) from None


def _path(filename) -> str:
    """The file name as the C++ side takes it; a NUL byte would silently cut it short there."""
    path = os.fsdecode(os.fspath(filename))
    if not path:
        raise ValueError("filename is empty")
    if "\0" in path:
        raise ValueError(f"filename {path!r} contains a NUL byte")
    return path


def _buffer(buffer) -> torch.Tensor:
    if not isinstance(buffer, torch.Tensor):
        raise TypeError(f"buffer must be a tensor, got {type(buffer).__name__}")
    if buffer.device.type != "cpu" or buffer.layout != torch.strided:
        raise ValueError(f"buffer must be a dense CPU tensor (move it with .cpu() first), got a {buffer.layout} "
                         f"tensor on {buffer.device}")
    if not buffer.is_contiguous():
        raise ValueError("buffer must be contiguous (call .contiguous() first)")
    return buffer


def _offset(file_offset) -> int:
    try:
        offset = operator.index(file_offset)
    except TypeError:
        offset = -1
    if isinstance(file_offset, bool) or offset < 0:
        raise ValueError(f"file_offset must be a non-negative integer, got {file_offset!r}")
    return offset


class aio_handle:  # DeepSpeed's name
    """Reads and writes between CPU tensors and files with O_DIRECT and libaio: each call is
    cut into `block_size` blocks, spread over `intra_op_parallelism` threads, each keeping up to
    `queue_depth` requests in flight. Blocking calls return 0 when done and raise OSError on
    failure; async ones return 0 at once and `wait()` finishes them (and raises their errors).
    Buffers must be contiguous CPU tensors; page-aligned ones (`new_cpu_locked_tensor`) go
    to the device directly, others through aligned bounce blocks."""

    def __init__(self, block_size: int = 1048576, queue_depth: int = 128, single_submit: bool = False,
                 overlap_events: bool = False, intra_op_parallelism: int = 1) -> None:
        self._handle = _io(_handle_class(), int(block_size), int(queue_depth), bool(single_submit),
                           bool(overlap_events), int(intra_op_parallelism))

    def get_block_size(self) -> int:
        return self._handle.get_block_size()

    def get_queue_depth(self) -> int:
        return self._handle.get_queue_depth()

    def get_single_submit(self) -> bool:
        return self._handle.get_single_submit()

    def get_overlap_events(self) -> bool:
        return self._handle.get_overlap_events()

    def get_intra_op_parallelism(self) -> int:
        return self._handle.get_intra_op_parallelism()

    def get_thread_count(self) -> int:
        return self.get_intra_op_parallelism()

    def get_alignment(self) -> int:
        return self._handle.get_alignment()

    def read(self, buffer: torch.Tensor, filename: str, validate: bool = False) -> int:
        """The file's first buffer.nbytes bytes into `buffer` (blocking)."""
        return self.pread(buffer, filename, validate, False)

    def write(self, buffer: torch.Tensor, filename: str, validate: bool = False) -> int:
        """`buffer` as the whole file (created or truncated; blocking)."""
        return _io(self._handle.write, _buffer(buffer), _path(filename), bool(validate))

    def pread(self, buffer: torch.Tensor, filename: str, validate: bool = False, async_op: bool = False,
              file_offset: int = 0) -> int:
        return _io(self._handle.pread, _buffer(buffer), _path(filename), bool(validate), bool(async_op),
                   _offset(file_offset))

    def pwrite(self, buffer: torch.Tensor, filename: str, validate: bool = False, async_op: bool = False,
               file_offset: int = 0) -> int:
        """`buffer` into the file at file_offset (created if missing, never truncated)."""
        return _io(self._handle.pwrite, _buffer(buffer), _path(filename), bool(validate), bool(async_op),
                   _offset(file_offset))

    def sync_pread(self, buffer: torch.Tensor, filename: str, file_offset: int = 0) -> int:
        return self.pread(buffer, filename, False, False, file_offset)

    def sync_pwrite(self, buffer: torch.Tensor, filename: str, file_offset: int = 0) -> int:
        return self.pwrite(buffer, filename, False, False, file_offset)

    def async_pread(self, buffer: torch.Tensor, filename: str, file_offset: int = 0) -> int:
        return self.pread(buffer, filename, False, True, file_offset)

    def async_pwrite(self, buffer: torch.Tensor, filename: str, file_offset: int = 0) -> int:
        return self.pwrite(buffer, filename, False, True, file_offset)

    def wait(self) -> int:
        """Finishes every async call made so far; returns how many there were."""
        return _io(self._handle.wait)

    def new_cpu_locked_tensor(self, num_elem: int, example_tensor: torch.Tensor) -> torch.Tensor:
        """A page-aligned, page-locked (mlock) CPU tensor of num_elem elements of example's dtype."""
        return self._handle.new_cpu_locked_tensor(int(num_elem), example_tensor)

    def free_cpu_locked_tensor(self, tensor: torch.Tensor) -> bool:
        """Forgets a tensor new_cpu_locked_tensor made; its memory is unlocked and freed when
        the last reference to it goes. False for a tensor this handle did not make."""
        return self._handle.free_cpu_locked_tensor(tensor)
