"""SparseSelfAttention and BertSparseSelfAttention, DeepSpeed's modules on our kernels."""

from __future__ import annotations

import math

import torch
from torch import nn

from .lut import layout_lut
from .ops import MASK_MODES, block_sparse_attention, scores_dtype, sparse_attention_ops
from .sparsity_config import FixedSparsityConfig, SparsityConfig


class SparseSelfAttention(nn.Module):
    """softmax(q k^T / sqrt(head_dim) + rpe + masks) v on the blocks of `sparsity_config`'s
    layout, for (batch, heads, seq, head_dim) inputs; seq must be a multiple of the block
    (SparseAttentionUtils.pad_to_block_size). Masks follow their modes: 'add' adds the mask,
    'mul' masks where it is 0. A unidirectional config also masks each diagonal block's
    upper triangle, so no token sees a later one."""

    def __init__(self, sparsity_config: SparsityConfig | None = None, key_padding_mask_mode: str = "add",
                 attn_mask_mode: str = "mul", max_seq_length: int = 2048) -> None:
        super().__init__()
        self.sparsity_config = sparsity_config or FixedSparsityConfig(num_heads=4)
        for name, mode in (("key_padding_mask_mode", key_padding_mask_mode), ("attn_mask_mode", attn_mask_mode)):
            if mode not in MASK_MODES:
                raise ValueError(f"{name} must be 'add' or 'mul', got {mode!r}")
        self.key_padding_mask_mode = key_padding_mask_mode
        self.attn_mask_mode = attn_mask_mode
        self.max_seq_length = max_seq_length
        self.register_buffer("master_layout", self.sparsity_config.make_layout(max_seq_length), persistent=False)
        # per (seq, device): a plain lookup, so a compiled forward traces no table building
        self._luts: dict[tuple[int, str], torch.Tensor] = {}
        sparse_attention_ops()  # loaded now: a compiled forward cannot load it

    def get_layout(self, seq_len: int) -> torch.Tensor:
        """The layout for seq_len: the top-left corner of the max_seq_length one (random blocks
        stay where they were drawn)."""
        if seq_len > self.max_seq_length:
            raise ValueError(f"sequence length {seq_len} exceeds max_seq_length {self.max_seq_length}")
        blocks = seq_len // self.sparsity_config.block
        return self.master_layout[:, :blocks, :blocks]

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, rpe: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if query.dim() != 4 or key.shape != query.shape or value.shape != query.shape:
            raise ValueError(f"query, key and value must all be (batch, heads, seq, head_dim), got {tuple(query.shape)}, "
                             f"{tuple(key.shape)} and {tuple(value.shape)}")
        batch, heads, seq, head_dim = query.shape
        config = self.sparsity_config
        if heads != config.num_heads:
            raise ValueError(f"the inputs have {heads} heads but the sparsity config has {config.num_heads}")
        if seq % config.block:
            raise ValueError(f"sequence length {seq} is not a multiple of the block size {config.block}; pad it with "
                             "SparseAttentionUtils.pad_to_block_size")
        if query.dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.float64) \
                or key.dtype != query.dtype or value.dtype != query.dtype:
            raise TypeError(f"query, key and value must share a float dtype (float32, bfloat16, float16, float64), "
                            f"got {query.dtype}, {key.dtype}, {value.dtype}")
        lut = self._luts.get((seq, str(query.device)))
        if lut is None:
            lut = self._luts[(seq, str(query.device))] = layout_lut(self.get_layout(seq), query.device)
        dtype = scores_dtype(query.dtype)
        return block_sparse_attention(
            query.contiguous(), key.contiguous(), value.contiguous(), lut, config.block, 1.0 / math.sqrt(head_dim),
            rpe=_prepared(rpe, (heads, seq, seq), "rpe", query.device, dtype),
            key_padding_mask=_prepared(key_padding_mask, (batch, seq), "key_padding_mask", query.device, dtype),
            attn_mask=_prepared(attn_mask, (seq, seq), "attn_mask", query.device, dtype),
            key_padding_mask_mode=self.key_padding_mask_mode, attn_mask_mode=self.attn_mask_mode,
            causal=config.attention == "unidirectional")


def _prepared(tensor: torch.Tensor | None, shape: tuple, name: str, device: torch.device,
              dtype: torch.dtype) -> torch.Tensor | None:
    """A mask or bias as the contiguous tensor of `shape` the kernels read (broadcast from fewer
    dims, e.g. a (seq, seq) rpe, or squeezed, e.g. a (batch, 1, 1, seq) padding mask)."""
    if tensor is None:
        return None
    squeezed = tensor.reshape([s for s in tensor.shape if s != 1] or [1]) if tensor.dim() > len(shape) else tensor
    try:
        return squeezed.to(device=device, dtype=dtype).expand(shape).contiguous()
    except RuntimeError:
        raise ValueError(f"{name} of shape {tuple(tensor.shape)} does not broadcast to {shape}") from None


class BertSparseSelfAttention(nn.Module):
    """A BERT self-attention layer (query / key / value projections) on SparseSelfAttention;
    `config` has hidden_size and num_attention_heads, as a Hugging Face BertConfig."""

    def __init__(self, config, sparsity_config: SparsityConfig | None = None, max_seq_length: int = 2048) -> None:
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"hidden_size ({config.hidden_size}) is not a multiple of num_attention_heads "
                             f"({config.num_attention_heads})")
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = config.hidden_size
        self.query = nn.Linear(config.hidden_size, self.all_head_size)
        self.key = nn.Linear(config.hidden_size, self.all_head_size)
        self.value = nn.Linear(config.hidden_size, self.all_head_size)
        self.sparse_self_attention = SparseSelfAttention(
            sparsity_config or FixedSparsityConfig(num_heads=config.num_attention_heads), max_seq_length=max_seq_length)
        self.returns_tuple = False  # True when it stands in for a Hugging Face BertSelfAttention

    def transpose_for_scores(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.num_attention_heads, self.attention_head_size).permute(0, 2, 1, 3)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
        """attention_mask: additive, broadcastable to (batch, seq) (Hugging Face's extended
        (batch, 1, 1, seq) mask of 0 / large negative works as is)."""
        query, key, value = (self.transpose_for_scores(layer(hidden_states))
                             for layer in (self.query, self.key, self.value))
        context = self.sparse_self_attention(query, key, value, key_padding_mask=attention_mask)
        context = context.permute(0, 2, 1, 3).contiguous()
        context = context.view(*context.shape[:-2], self.all_head_size)
        return (context,) if self.returns_tuple else context
