"""Block-sparse attention layouts, with DeepSpeed's classes, arguments and defaults.

`make_layout(seq_len)` returns an int64 tensor (num_heads, seq_len / block, seq_len / block):
1 where a block of queries attends to a block of keys. Random blocks (Variable, BigBird) come
from `random.Random(seed)`: the same seed gives the same layout (DeepSpeed draws from the
global `random` module; seed=None does that too).
"""

from __future__ import annotations

import random

import torch

ATTENTIONS = ("unidirectional", "bidirectional")


def _check_attention(attention: str) -> str:
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be 'unidirectional' or 'bidirectional', got {attention!r}")
    return attention


def _check_global_ranges(starts, ends) -> None:
    if ends is None:
        return
    if len(starts) != len(ends):
        raise ValueError(f"global_block_indices has {len(starts)} entries but global_block_end_indices {len(ends)}")
    for start, end in zip(starts, ends):
        if start >= end:
            raise ValueError(f"global block start index {start} must be smaller than its end index {end}")


class SparsityConfig:
    """What every layout has: heads, block size, and whether heads get layouts of their own."""

    def __init__(self, num_heads: int, block: int = 16, different_layout_per_head: bool = False,
                 seed: int | None = None) -> None:
        if num_heads < 1 or block < 1:
            raise ValueError(f"num_heads and block must be positive, got {num_heads} and {block}")
        self.num_heads = num_heads
        self.block = block
        self.different_layout_per_head = different_layout_per_head
        self.num_layout_heads = num_heads if different_layout_per_head else 1
        self.attention = "bidirectional"
        self.random = random.Random(seed) if seed is not None else random

    def setup_layout(self, seq_len: int) -> torch.Tensor:
        if seq_len % self.block:
            raise ValueError(f"sequence length {seq_len} is not a multiple of the block size {self.block}; pad it "
                             "with SparseAttentionUtils.pad_to_block_size")
        blocks = seq_len // self.block
        return torch.zeros((self.num_heads, blocks, blocks), dtype=torch.int64)

    def check_and_propagate_first_head_layout(self, layout: torch.Tensor) -> torch.Tensor:
        if not self.different_layout_per_head:
            layout[1:] = layout[0]
        return layout

    def make_layout(self, seq_len: int) -> torch.Tensor:
        layout = self.setup_layout(seq_len)
        for head in range(self.num_layout_heads):
            self.set_head_layout(head, layout[head])
        return self.check_and_propagate_first_head_layout(layout)

    def set_head_layout(self, head: int, layout: torch.Tensor) -> None:
        raise TypeError(f"{type(self).__name__} defines no layout: use one of the *SparsityConfig classes")

    # ---- pieces several layouts share -----------------------------------------------------
    def _windows(self, layout: torch.Tensor, sizes) -> None:
        """Consecutive local windows of the given block counts (the last size repeats)."""
        blocks, start = layout.shape[0], 0
        sizes = list(sizes)
        while start < blocks:
            size = sizes.pop(0) if len(sizes) > 1 else sizes[0]
            end = min(start + size, blocks)
            for row in range(start, end):
                layout[row, start:(row + 1 if self.attention == "unidirectional" else end)] = 1
            start = end

    def _sliding(self, layout: torch.Tensor, width: int, causal: bool) -> None:
        blocks = layout.shape[0]
        if blocks < width:
            raise ValueError(f"num_sliding_window_blocks ({width}) exceeds the {blocks} blocks of a row")
        half = width // 2
        for row in range(blocks):
            layout[row, max(0, row - half):(row + 1 if causal else min(row + half + 1, blocks))] = 1

    def _random(self, layout: torch.Tensor, count: int, causal: bool) -> None:
        blocks = layout.shape[0]
        if blocks < count:
            raise ValueError(f"num_random_blocks ({count}) exceeds the {blocks} blocks of a row")
        for row in range(blocks):
            choices = range(row + 1) if causal else range(blocks)
            layout[row, self.random.sample(choices, min(count, len(choices)))] = 1

    def _global_ranges(self, layout: torch.Tensor, starts, ends, rows: bool) -> None:
        """Global columns (every row attends to them) and, with rows, global rows."""
        blocks = layout.shape[0]
        for start, end in zip(starts, ends if ends is not None else [s + 1 for s in starts]):
            if start >= blocks:
                continue
            end = min(end, blocks)
            if rows:
                layout[start:end, :] = 1
            layout[0 if self.attention == "bidirectional" else start:, start:end] = 1


class DenseSparsityConfig(SparsityConfig):
    """Every block: dense attention, for comparison."""

    def set_head_layout(self, head: int, layout: torch.Tensor) -> None:
        layout.fill_(1)


class FixedSparsityConfig(SparsityConfig):
    """Sparse Transformer's fixed pattern: local windows of num_local_blocks, and the last
    num_global_blocks of each window (another position per head with
    num_different_global_patterns) attended by every later (or every) row."""

    def __init__(self, num_heads: int, block: int = 16, different_layout_per_head: bool = False,
                 num_local_blocks: int = 4, num_global_blocks: int = 1, attention: str = "bidirectional",
                 horizontal_global_attention: bool = False, num_different_global_patterns: int = 1,
                 seed: int | None = None) -> None:
        super().__init__(num_heads, block, different_layout_per_head, seed)
        if num_local_blocks % num_global_blocks:
            raise ValueError(f"num_local_blocks ({num_local_blocks}) must be a multiple of num_global_blocks "
                             f"({num_global_blocks})")
        self.attention = _check_attention(attention)
        if horizontal_global_attention and attention != "bidirectional":
            raise ValueError("horizontal_global_attention needs attention='bidirectional'")
        if num_different_global_patterns > 1 and not different_layout_per_head:
            raise ValueError("num_different_global_patterns > 1 needs different_layout_per_head=True")
        if num_different_global_patterns > num_local_blocks // num_global_blocks:
            raise ValueError(f"num_different_global_patterns ({num_different_global_patterns}) cannot exceed "
                             f"num_local_blocks / num_global_blocks ({num_local_blocks // num_global_blocks})")
        self.num_local_blocks = num_local_blocks
        self.num_global_blocks = num_global_blocks
        self.horizontal_global_attention = horizontal_global_attention
        self.num_different_global_patterns = num_different_global_patterns

    def set_head_layout(self, head: int, layout: torch.Tensor) -> None:
        self._windows(layout, [self.num_local_blocks])
        blocks, local, size = layout.shape[0], self.num_local_blocks, self.num_global_blocks
        first = local - (1 + head % self.num_different_global_patterns) * size
        full = blocks - blocks % local
        starts = list(range(first, full, local))
        if full < blocks:  # a short last window still gets its global blocks
            starts.append(min(full + first, blocks - size))
        self._global_ranges(layout, starts, [s + size for s in starts], self.horizontal_global_attention)


class VariableSparsityConfig(SparsityConfig):
    """Fixed, with random blocks, windows of varying sizes and chosen global blocks."""

    def __init__(self, num_heads: int, block: int = 16, different_layout_per_head: bool = False,
                 num_random_blocks: int = 0, local_window_blocks=(4,), global_block_indices=(0,),
                 global_block_end_indices=None, attention: str = "bidirectional",
                 horizontal_global_attention: bool = False, seed: int | None = None) -> None:
        super().__init__(num_heads, block, different_layout_per_head, seed)
        _check_global_ranges(global_block_indices, global_block_end_indices)
        self.attention = _check_attention(attention)
        if horizontal_global_attention and attention != "bidirectional":
            raise ValueError("horizontal_global_attention needs attention='bidirectional'")
        self.num_random_blocks = num_random_blocks
        self.local_window_blocks = list(local_window_blocks)
        self.global_block_indices = list(global_block_indices)
        self.global_block_end_indices = global_block_end_indices
        self.horizontal_global_attention = horizontal_global_attention

    def set_head_layout(self, head: int, layout: torch.Tensor) -> None:
        self._random(layout, self.num_random_blocks, causal=False)
        self._windows(layout, self.local_window_blocks)
        self._global_ranges(layout, self.global_block_indices, self.global_block_end_indices,
                            self.horizontal_global_attention)


class BigBirdSparsityConfig(SparsityConfig):
    """BigBird: random blocks, a sliding window and the first blocks global (rows and columns)."""

    def __init__(self, num_heads: int, block: int = 16, different_layout_per_head: bool = False,
                 num_random_blocks: int = 1, num_sliding_window_blocks: int = 3, num_global_blocks: int = 1,
                 attention: str = "bidirectional", seed: int | None = None) -> None:
        super().__init__(num_heads, block, different_layout_per_head, seed)
        self.attention = _check_attention(attention)
        self.num_random_blocks = num_random_blocks
        self.num_sliding_window_blocks = num_sliding_window_blocks
        self.num_global_blocks = num_global_blocks

    def set_head_layout(self, head: int, layout: torch.Tensor) -> None:
        if layout.shape[0] < self.num_global_blocks:
            raise ValueError(f"num_global_blocks ({self.num_global_blocks}) exceeds the {layout.shape[0]} blocks "
                             "of a row")
        causal = self.attention == "unidirectional"
        self._random(layout, self.num_random_blocks, causal)
        self._sliding(layout, self.num_sliding_window_blocks, causal=False)
        layout[:self.num_global_blocks, :] = 1
        layout[:, :self.num_global_blocks] = 1
        if causal:
            layout.copy_(torch.tril(layout))


class BSLongformerSparsityConfig(SparsityConfig):
    """Block-sparse Longformer: a sliding window and global blocks (rows and columns)."""

    def __init__(self, num_heads: int, block: int = 16, different_layout_per_head: bool = False,
                 num_sliding_window_blocks: int = 3, global_block_indices=(0,), global_block_end_indices=None,
                 attention: str = "bidirectional", seed: int | None = None) -> None:
        super().__init__(num_heads, block, different_layout_per_head, seed)
        _check_global_ranges(global_block_indices, global_block_end_indices)
        self.attention = _check_attention(attention)
        self.num_sliding_window_blocks = num_sliding_window_blocks
        self.global_block_indices = list(global_block_indices)
        self.global_block_end_indices = global_block_end_indices

    def set_head_layout(self, head: int, layout: torch.Tensor) -> None:
        self._sliding(layout, self.num_sliding_window_blocks, causal=False)
        ends = self.global_block_end_indices or [s + 1 for s in self.global_block_indices]
        for start, end in zip(self.global_block_indices, ends):
            if start < layout.shape[0]:
                layout[start:end, :] = 1
                layout[:, start:end] = 1
        if self.attention == "unidirectional":
            layout.copy_(torch.tril(layout))


class LocalSlidingWindowSparsityConfig(SparsityConfig):
    """Only a sliding window of blocks (causal by default, as DeepSpeed's)."""

    def __init__(self, num_heads: int, block: int = 16, num_sliding_window_blocks: int = 3,
                 attention: str = "unidirectional", seed: int | None = None) -> None:
        super().__init__(num_heads, block, False, seed)
        self.attention = _check_attention(attention)
        self.num_sliding_window_blocks = num_sliding_window_blocks

    def set_head_layout(self, head: int, layout: torch.Tensor) -> None:
        self._sliding(layout, self.num_sliding_window_blocks, causal=self.attention == "unidirectional")
