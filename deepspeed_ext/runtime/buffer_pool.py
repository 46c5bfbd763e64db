"""Reusable communication buffers. A fresh buffer of tens of MB is new memory from the
kernel every time, a page fault per 4 KiB, which costs a large share of a step for big
gradient buckets (docs/zero.md has the figures); a kept one is not."""

from __future__ import annotations

import torch


class BufferPool:
    def __init__(self, min_numel: int) -> None:
        self.min_numel = min_numel
        self.spare: list[torch.Tensor] = []

    def take(self, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A 1-D buffer of at least numel elements (narrow it to size); give it back when done."""
        for index, spare in enumerate(self.spare):
            if spare.numel() >= numel and spare.dtype == dtype and spare.device == device:
                return self.spare.pop(index)
        return torch.empty(max(numel, self.min_numel), dtype=dtype, device=device)

    def give(self, buffer: torch.Tensor) -> None:
        self.spare.append(buffer)
