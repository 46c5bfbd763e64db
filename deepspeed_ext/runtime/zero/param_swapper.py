"""ZeRO-Infinity parameter offload (`offload_param.device: nvme`, stage 3): the shards of every
sub-group past the first `max_in_cpu` elements live in files under
`<nvme_path>/zero_stage_3/params/rank<rank>/`, one per param. A swapped-out shard (ds_tensor)
is a meta tensor: it keeps its size and dtype, and anything that would read it without
bringing it in fails loudly instead of reading nothing. Gathers read the shards they send
and drop them again (the files stay current: shards change only in the optimizer step); the
step reads a whole sub-group into one buffer, updates it and writes it back.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from deepspeed_ext.ops.async_io import aio_handle

from .groups import ShardedGroup


def _meta_like(tensor: torch.Tensor) -> torch.Tensor:
    return torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")


class ParamSwapper:
    def __init__(self, groups: list[ShardedGroup], folder: Path, aio: dict, max_in_cpu: int) -> None:
        self.folder = folder
        self.handle = aio_handle(**aio)
        self.groups: list[ShardedGroup] = []  # the swapped ones; earlier groups within max_in_cpu stay
        kept = 0
        for group in groups:
            if kept + group.lp_shard.numel() <= max_in_cpu:
                kept += group.lp_shard.numel()
            else:
                self.groups.append(group)
        for group in self.groups:
            for param in group.params:
                param.ds_param_swapper = self
        for group in self.groups:
            self._write_out(group)

    def _path(self, param: torch.nn.Parameter) -> str:
        return os.fspath(self.folder / f"param{param.ds_id}.swp")

    def swapped_bytes(self) -> int:
        return sum(g.lp_shard.numel() * g.lp_shard.element_size() for g in self.groups if g.lp_shard.is_meta)

    # ---- single params, for gathers ----------------------------------------------------
    def bring_in(self, params: list[torch.nn.Parameter]) -> None:
        """Reads the shards of these (swapped-out) params into fresh buffers."""
        for param in params:
            param.ds_tensor = torch.empty(param.ds_tensor.shape, dtype=param.ds_tensor.dtype)
            self.handle.async_pread(param.ds_tensor, self._path(param))
        self.handle.wait()

    def drop(self, params: list[torch.nn.Parameter]) -> None:
        for param in params:
            param.ds_tensor = _meta_like(param.ds_tensor)

    def write(self, param: torch.nn.Parameter, values: torch.Tensor) -> None:
        """values as the start of the param's shard (an edit, or a checkpoint load)."""
        values = values.to(param.ds_tensor.dtype).contiguous()
        if not param.ds_tensor.is_meta:
            param.ds_tensor[:values.numel()].copy_(values)
        self.handle.sync_pwrite(values, self._path(param))

    # ---- whole sub-groups, for the optimizer step ---------------------------------------------
    def _read_in(self, group: ShardedGroup) -> None:
        shard = torch.empty(group.lp_shard.shape, dtype=group.lp_shard.dtype)
        for param, offset, size in zip(group.params, group.layout.shard_offsets, group.layout.slice_sizes):
            param.ds_tensor = shard.narrow(0, offset, size)
            self.handle.async_pread(param.ds_tensor, self._path(param))
        self.handle.wait()
        group.lp_shard = shard

    def _write_out(self, group: ShardedGroup) -> None:
        for param in group.params:
            self.handle.async_pwrite(param.ds_tensor, self._path(param))
        self.handle.wait()
        for param in group.params:
            param.ds_tensor = _meta_like(param.ds_tensor)
        group.lp_shard = _meta_like(group.lp_shard)

    @contextlib.contextmanager
    def group_resident(self, groups: list[ShardedGroup]):
        """These sub-groups' shards in memory, written back to their files afterwards."""
        swapped = [g for g in groups if g.lp_shard.is_meta]  # only groups of this swapper are meta
        for group in swapped:
            self._read_in(group)
        try:
            yield
        finally:
            for group in swapped:
                self._write_out(group)
