"""Block-sparse self-attention (the sparse_attention op), with DeepSpeed's classes:

    from deepspeed_ext.ops.sparse_attention import SparseSelfAttention, FixedSparsityConfig
    attention = SparseSelfAttention(FixedSparsityConfig(num_heads=8, block=64), max_seq_length=4096)
    out = attention(q, k, v, key_padding_mask=mask)      # (batch, heads, seq, head_dim)
"""

from .config import sparsity_config_from
from .ops import block_sparse_attention
from .sparse_attention_utils import SparseAttentionUtils
from .sparse_self_attention import BertSparseSelfAttention, SparseSelfAttention
from .sparsity_config import (
                              BigBirdSparsityConfig,
                              BSLongformerSparsityConfig,
                              DenseSparsityConfig,
                              FixedSparsityConfig,
                              LocalSlidingWindowSparsityConfig,
                              SparsityConfig,
                              VariableSparsityConfig,
)

__all__ = ["BSLongformerSparsityConfig", "BertSparseSelfAttention", "BigBirdSparsityConfig", "DenseSparsityConfig",
           "FixedSparsityConfig", "LocalSlidingWindowSparsityConfig", "SparseAttentionUtils", "SparseSelfAttention",
           "SparsityConfig", "VariableSparsityConfig", "block_sparse_attention", "sparsity_config_from"]
