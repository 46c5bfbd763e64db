"""SparseAttentionUtils: adapting a (Hugging Face style) BERT / RoBERTa model to sparse
attention, and padding inputs to a multiple of the block size."""

from __future__ import annotations

import torch
from torch import nn

from .sparse_self_attention import BertSparseSelfAttention
from .sparsity_config import FixedSparsityConfig, SparsityConfig


def _encoder_of(model: nn.Module):
    for name in ("bert", "roberta"):
        if hasattr(model, name):
            return getattr(model, name)
    raise ValueError(f"{type(model).__name__} has neither .bert nor .roberta: only BERT and RoBERTa style models "
                     "are supported")


class SparseAttentionUtils:
    @staticmethod
    def extend_position_embedding(model: nn.Module, max_position: int) -> nn.Module:
        """Position embeddings extended to max_position by repeating the trained ones (RoBERTa
        keeps its first two reserved positions)."""
        base = _encoder_of(model)
        embeddings = base.embeddings.position_embeddings
        original, dim = embeddings.weight.shape
        offset = 2 if hasattr(model, "roberta") else 0
        max_position += offset
        if max_position <= original:
            raise ValueError(f"max_position ({max_position - offset}) must exceed the model's {original - offset}")
        weight = embeddings.weight.new_empty(max_position, dim)
        with torch.no_grad():
            weight[:offset] = embeddings.weight[:offset]
            trained = embeddings.weight[offset:]
            for start in range(offset, max_position, original - offset):
                count = min(original - offset, max_position - start)
                weight[start:start + count] = trained[:count]
        base.embeddings.position_embeddings = nn.Embedding.from_pretrained(weight, freeze=False)
        if hasattr(base.embeddings, "position_ids"):
            base.embeddings.register_buffer("position_ids", torch.arange(max_position).unsqueeze(0), persistent=False)
        model.config.max_position_embeddings = max_position
        return model

    @staticmethod
    def update_tokenizer_model_max_length(tokenizer, max_position: int):
        tokenizer.model_max_length = max_position
        tokenizer.init_kwargs["model_max_length"] = max_position
        return tokenizer

    @staticmethod
    def replace_model_self_attention_with_sparse_self_attention(model: nn.Module, max_position: int,
                                                                sparsity_config: SparsityConfig | None = None):
        """Every encoder layer's self-attention replaced by BertSparseSelfAttention with the
        same query / key / value weights."""
        base = _encoder_of(model)
        config = model.config
        config.max_position_embeddings = max_position
        sparsity_config = sparsity_config or FixedSparsityConfig(num_heads=config.num_attention_heads)
        SparseAttentionUtils.replace_self_attention_layer_with_sparse_self_attention_layer(
            config, base.encoder.layer, sparsity_config)
        return model

    @staticmethod
    def replace_self_attention_layer_with_sparse_self_attention_layer(config, layers,
                                                                      sparsity_config: SparsityConfig | None = None):
        sparsity_config = sparsity_config or FixedSparsityConfig(num_heads=config.num_attention_heads)
        for layer in layers:
            dense = layer.attention.self
            sparse = BertSparseSelfAttention(config, sparsity_config, max_seq_length=config.max_position_embeddings)
            sparse.query, sparse.key, sparse.value = dense.query, dense.key, dense.value
            sparse.returns_tuple = True  # Hugging Face's BertAttention takes the first output
            layer.attention.self = sparse
        return layers

    @staticmethod
    def pad_to_block_size(block_size: int, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                          pad_token_id: int, model_embeddings):
        """Pads every given input on the right to a multiple of block_size: ids with
        pad_token_id, the attention mask with 0 (padding is not attended), token types with 0,
        positions continuing, embeddings with the pad token's embedding. Returns (pad_len,
        input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)."""
        shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
        seq_len = shape[1]
        pad_len = (block_size - seq_len % block_size) % block_size
        if pad_len == 0:
            return 0, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds

        def pad(tensor, value):
            return None if tensor is None else nn.functional.pad(tensor, (0, pad_len), value=value)

        if inputs_embeds is not None:
            ids = inputs_embeds.new_full((shape[0], pad_len), pad_token_id, dtype=torch.long)
            inputs_embeds = torch.cat([inputs_embeds, model_embeddings(ids)], dim=-2)
        if position_ids is not None:
            more = torch.arange(seq_len, seq_len + pad_len, device=position_ids.device).expand(shape[0], pad_len)
            position_ids = torch.cat([position_ids, more.to(position_ids.dtype)], dim=1)
        return (pad_len, pad(input_ids, pad_token_id), pad(attention_mask, 0), pad(token_type_ids, 0), position_ids,
                inputs_embeds)

    @staticmethod
    def unpad_sequence_output(pad_len: int, sequence_output: torch.Tensor) -> torch.Tensor:
        return sequence_output[:, :-pad_len] if pad_len > 0 else sequence_output
