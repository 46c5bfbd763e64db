"""ZeRO-Infinity optimizer offload (`offload_optimizer.device: nvme`): every sub-group's fp32
master and optimizer states (exp_avg, ...) live in files under
`<nvme_path>/zero_stage_<stage>/optimizer/rank<rank>/` and come into page-locked buffers only
for their own step. While sub-group i steps, i + 1 is being read and i - 1 written (with
`buffer_count` >= 3; 2 reads ahead only, 1 does neither), through two aio handles configured
by the `aio` section.

The tensors keep their identity (the optimizer's state dict and the groups hold them): a
swapped-out tensor is empty, and swapping in points it at a buffer and reads its file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from deepspeed_ext.ops.async_io import aio_handle

from .groups import ShardedGroup


def swap_folder(nvme_path: str, stage: int, rank: int, section: str) -> Path:
    """<nvme_path>/zero_stage_<stage>/<optimizer|params>/rank<rank>, created."""
    kind = "optimizer" if section == "offload_optimizer" else "params"
    folder = Path(nvme_path) / f"zero_stage_{stage}" / kind / f"rank{rank}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(error.errno, f"zero_optimization.{section}.nvme_path: cannot create {folder}: "
                                   f"{error.strerror}") from None
    return folder


class OptimizerSwapper:
    def __init__(self, groups: list[ShardedGroup], optimizer: torch.optim.Optimizer, folder: Path, aio: dict,
                 buffer_count: int) -> None:
        self.groups, self.optimizer, self.folder = groups, optimizer, folder
        self.reader, self.writer = aio_handle(**aio), aio_handle(**aio)
        self.buffer_count = buffer_count
        self.numel = max(g.lp_shard.numel() for g in groups)
        self.free: list[torch.Tensor] = []  # page-locked buffers of self.numel fp32 elements
        self.held: dict[int, list[torch.Tensor]] = {}  # buffers behind a resident or incoming group
        self.names: list[list[str]] = [[] for _ in groups]  # what each swapped-out group has on disk
        self.resident = [True] * len(groups)
        self.prefetching: int | None = None
        self.writing: int | None = None
        for index, group in enumerate(groups):
            if hasattr(group.params[0], "ds_master_shard"):  # stage 3: a view would pin the master in memory
                for param, offset, size in zip(group.params, group.layout.shard_offsets, group.layout.slice_sizes):
                    param.ds_master_shard = MasterSlice(self, index, offset, size)
            self._swap_out(index)
        self._finish_writes()

    # ---- what is swapped ----------------------------------------------------------------
    def _tensors(self, index: int) -> dict[str, torch.Tensor]:
        """The group's master and its optimizer states shaped like it (not the step count)."""
        master = self.groups[index].master
        state = self.optimizer.state.get(master, {})
        return {"master": master, **{key: value for key, value in state.items()
                                     if torch.is_tensor(value) and value.dim() == 1}}

    def _path(self, index: int, name: str) -> str:
        return os.fspath(self.folder / f"group{index}_{name}.swp")

    def swapped_bytes(self) -> int:
        return sum(len(names) * g.lp_shard.numel() * 4 for g, names, resident in
                   zip(self.groups, self.names, self.resident) if not resident)

    def write_master(self, index: int, offset: int, values: torch.Tensor) -> None:
        """values into group `index`'s master from element `offset`: in memory when resident,
        else into its file (after any write of the group still in flight)."""
        if self.resident[index]:
            self.groups[index].master.data.narrow(0, offset, values.numel()).copy_(values)
            return
        if self.writing == index:
            self._finish_writes()
        self.writer.sync_pwrite(values.detach().float().contiguous(), self._path(index, "master"),
                                file_offset=offset * 4)

    # ---- moving groups --------------------------------------------------------------------
    def _acquire(self) -> torch.Tensor:
        return self.free.pop() if self.free else self.reader.new_cpu_locked_tensor(self.numel, torch.empty(0))

    def _start_reading(self, index: int) -> None:
        buffers = []
        numel = self.groups[index].lp_shard.numel()  # the master's size, also while it is swapped out
        for name, tensor in self._tensors(index).items():
            buffer = self._acquire()
            buffers.append(buffer)
            tensor.data = buffer[:numel]
            self.reader.async_pread(tensor.data, self._path(index, name))
        self.held[index] = buffers

    def _swap_out(self, index: int) -> None:
        """Start writing the group's tensors; they are released once the writes finish."""
        self._finish_writes()
        tensors = self._tensors(index)
        self.names[index] = list(tensors)
        for name, tensor in tensors.items():
            self.writer.async_pwrite(tensor.data, self._path(index, name))
        self.resident[index] = False
        self.writing = index

    def _finish_writes(self) -> None:
        if self.writing is None:
            return
        self.writer.wait()
        for tensor in self._tensors(self.writing).values():
            tensor.data = torch.empty(0, dtype=tensor.dtype)
        self.free.extend(self.held.pop(self.writing, []))
        self.writing = None

    def bring_in(self, index: int) -> None:
        """Group `index` resident (waiting for its prefetch), and the next one on its way."""
        if not self.resident[index]:
            if self.prefetching != index:
                self._start_reading(index)
            self.reader.wait()
        self.prefetching = None
        self.resident[index] = True
        following = index + 1
        if self.buffer_count >= 2 and following < len(self.groups) and not self.resident[following]:
            self._start_reading(following)
            self.prefetching = following

    def send_out(self, index: int) -> None:
        self._swap_out(index)
        if self.buffer_count < 3:
            self._finish_writes()

    def in_turn(self):
        """Yields each group index with that group resident; swapped out again afterwards."""
        for index in range(len(self.groups)):
            self.bring_in(index)
            yield index
            self.send_out(index)
        self._finish_writes()

    @contextlib.contextmanager
    def all_resident(self):
        """Every group in memory (ordinary allocations) for a checkpoint save or load, then
        written back out: the states may be new tensors by then (load_state_dict replaces them)."""
        for index in range(len(self.groups)):
            if not self.resident[index]:
                self._start_reading(index)
                self.reader.wait()
                for tensor in self._tensors(index).values():
                    tensor.data = tensor.data.clone()
                self.free.extend(self.held.pop(index))
                self.resident[index] = True
        try:
            yield
        finally:
            for index in range(len(self.groups)):
                self._swap_out(index)
            self._finish_writes()


class MasterSlice:
    """A stage-3 param's slice of its swapped group master (ds_master_shard): what write_shard
    (GatheredParameters edits, checkpoint loads) writes lands in the master, wherever it is."""

    def __init__(self, swapper: OptimizerSwapper, index: int, offset: int, size: int) -> None:
        self.swapper, self.index, self.offset, self.size = swapper, index, offset, size

    def narrow(self, dim: int, start: int, length: int) -> MasterSlice:
        assert dim == 0 and 0 <= start and start + length <= self.size
        return MasterSlice(self.swapper, self.index, self.offset + start, length)

    def copy_(self, values: torch.Tensor) -> None:
        assert values.numel() == self.size
        self.swapper.write_master(self.index, self.offset, values.reshape(-1))
