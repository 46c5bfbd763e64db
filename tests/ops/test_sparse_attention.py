"""The sparse_attention op: forward and gradients equal dense attention with the layout applied as a
mask, for every layout class, block size 16-128, causal and bidirectional, with masks and rpe,
in fp32 (and bf16 within its precision); gradcheck in fp64; every SIMD level gives the same
bits; the fused op equals its building blocks (sdd, softmax, dsd) composed; scores take memory
for the non-zero blocks only; bad input names the argument."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from deepspeed_ext.ops import sparse_attention
from deepspeed_ext.ops.sparse_attention import (
    BertSparseSelfAttention,
    BigBirdSparsityConfig,
    BSLongformerSparsityConfig,
    DenseSparsityConfig,
    FixedSparsityConfig,
    LocalSlidingWindowSparsityConfig,
    SparseAttentionUtils,
    SparseSelfAttention,
    VariableSparsityConfig,
    block_sparse_attention,
    sparsity_config_from,
)
from deepspeed_ext.ops.sparse_attention.lut import layout_lut
from deepspeed_ext.ops.sparse_attention.ops import sparse_attention_ops

HEADS = 2


def configs(block: int, attention: str):
    common = {"num_heads": HEADS, "block": block}
    return {
        "dense": DenseSparsityConfig(**common),
        "fixed": FixedSparsityConfig(**common, num_local_blocks=2, attention=attention,
                                     different_layout_per_head=True, num_different_global_patterns=2),
        "variable": VariableSparsityConfig(**common, num_random_blocks=1, local_window_blocks=[1, 2],
                                           global_block_indices=[1], attention=attention, seed=3),
        "bigbird": BigBirdSparsityConfig(**common, num_random_blocks=1, attention=attention, seed=4),
        "bslongformer": BSLongformerSparsityConfig(**common, global_block_indices=[0, 3], attention=attention),
        "local": LocalSlidingWindowSparsityConfig(**common, attention=attention),
    }


def dense_reference(q, k, v, layout, block, rpe=None, key_padding=None, attn_mask=None, causal=False):
    """Plain attention with the layout (and masks) as -inf entries; fully masked rows give 0."""
    allowed = layout.repeat_interleave(block, 1).repeat_interleave(block, 2).bool()
    if causal:
        allowed = allowed & torch.ones(allowed.shape[-1], allowed.shape[-1], dtype=torch.bool).tril()
    logits = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if rpe is not None:
        logits = logits + rpe.double()
    if key_padding is not None:
        logits = logits + key_padding.double()[:, None, None, :]
    if attn_mask is not None:
        allowed = allowed & (attn_mask != 0)
    logits = logits.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(logits, -1).nan_to_num(0.0)
    return (probs @ v.double()).to(q.dtype)


def inputs(batch, seq, dim, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, HEADS, seq, dim, generator=generator).to(dtype).requires_grad_() for _ in range(3)]


@pytest.mark.parametrize("name,attention", [("dense", "bidirectional")] + [
    (name, attention) for name in ("fixed", "variable", "bigbird", "bslongformer", "local")
    for attention in ("bidirectional", "unidirectional")])  # the dense layout has no direction
@pytest.mark.parametrize("block", [16, 32, 64, 128])
def test_forward_and_gradients_match_dense_masked_attention(name, attention, block):
    config = configs(block, attention)[name]
    seq, dim = 4 * block, 16
    attention_module = SparseSelfAttention(config, max_seq_length=seq)
    q, k, v = inputs(2, seq, dim, seed=block)
    out = attention_module(q, k, v)
    layout = attention_module.get_layout(seq)
    expected = dense_reference(q, k, v, layout, block, causal=config.attention == "unidirectional")
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, (q, k, v), grad)
    reference = torch.autograd.grad(expected, (q, k, v), grad)
    for got, want in zip(ours, reference):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)


def test_masks_and_rpe_in_both_modes():
    config = BigBirdSparsityConfig(HEADS, 16, seed=1)
    seq = 96
    q, k, v = inputs(2, seq, 8, seed=7)
    rpe = torch.randn(HEADS, seq, seq)
    padding = torch.zeros(2, seq)
    padding[1, -20:] = -10000.0  # additive, as BERT's extended mask
    keep = torch.ones(seq, seq)
    keep[:, 5] = 0  # mul mode: 0 masks key 5 for every query
    module = SparseSelfAttention(config, key_padding_mask_mode="add", attn_mask_mode="mul", max_seq_length=seq)
    out = module(q, k, v, rpe=rpe, key_padding_mask=padding.view(2, 1, 1, seq), attn_mask=keep)
    expected = dense_reference(q, k, v, module.get_layout(seq), 16, rpe, padding, keep)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(torch.autograd.grad(out.sum(), (q, k, v)), torch.autograd.grad(expected.sum(), (q, k, v))):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)
    mul_padding = (padding == 0).float()  # mul mode: 0 masks
    module.key_padding_mask_mode = "mul"
    torch.testing.assert_close(module(q, k, v, rpe=rpe, key_padding_mask=mul_padding, attn_mask=keep), out,
                               rtol=1e-5, atol=1e-5)


def test_a_row_with_every_key_masked_gives_zeros():
    config = LocalSlidingWindowSparsityConfig(HEADS, 16, num_sliding_window_blocks=1, attention="bidirectional")
    q, k, v = inputs(1, 32, 8)
    keep = torch.ones(32, 32)
    keep[3, :] = 0
    out = SparseSelfAttention(config, max_seq_length=32)(q, k, v, attn_mask=keep)
    assert torch.all(out[:, :, 3] == 0) and torch.isfinite(out).all()


def test_bf16_within_its_precision():
    config = FixedSparsityConfig(HEADS, 32, num_local_blocks=2)
    q, k, v = inputs(2, 128, 32, seed=3)
    module = SparseSelfAttention(config, max_seq_length=128)
    out = module(*(t.detach().bfloat16().requires_grad_() for t in (q, k, v)))
    assert out.dtype == torch.bfloat16
    expected = dense_reference(q, k, v, module.get_layout(128), 32)
    torch.testing.assert_close(out.float(), expected, rtol=0.02, atol=0.02)  # bf16: 8 bits of mantissa


def test_gradcheck_in_fp64():
    lut = layout_lut(BigBirdSparsityConfig(HEADS, 4, seed=2).make_layout(16), torch.device("cpu"))
    q, k, v = inputs(1, 16, 3, torch.float64, seed=5)
    rpe = torch.randn(HEADS, 16, 16, dtype=torch.float64)

    def attention(q, k, v):
        return block_sparse_attention(q, k, v, lut, 4, 0.5, rpe=rpe, causal=True)

    assert torch.autograd.gradcheck(attention, (q, k, v))


def test_simd_levels_agree_bit_for_bit(monkeypatch):
    config = BigBirdSparsityConfig(HEADS, 32, seed=6)
    q, k, v = inputs(2, 128, 24, seed=9)
    module = SparseSelfAttention(config, max_seq_length=128)
    results = {}
    for level in ("scalar", "avx2", "avx512"):
        monkeypatch.setenv("DS_SIMD", level)
        out = module(q, k, v)
        results[level] = (out, *torch.autograd.grad(out.sum(), (q, k, v)))
    for level in ("avx2", "avx512"):
        for got, want in zip(results[level], results["scalar"]):
            assert torch.equal(got, want), level


def test_scores_take_memory_for_the_nonzero_blocks_only():
    config = BSLongformerSparsityConfig(HEADS, 64)
    seq = 1024
    layout = config.make_layout(seq)
    lut = layout_lut(layout, torch.device("cpu"))
    q, k, _ = (t.detach() for t in inputs(1, seq, 16))
    scores = sparse_attention_ops().sparse_sdd(q, k, lut, 64)
    assert scores.numel() == int(layout.sum()) * 64 * 64
    assert scores.numel() < 0.3 * HEADS * seq * seq  # a dense score matrix would hold HEADS * seq^2


def composed_attention(q, k, v, lut, block, scale, rpe, padding, keep, causal):
    """The three building-block ops in turn (what the fused op does in one pass)."""
    ops = sparse_attention_ops()
    scores = ops.sparse_sdd(q, k, lut, block)
    probs = ops.sparse_softmax(scores, lut, q.shape[1], q.shape[2], block, scale, rpe, padding, keep, 1, 2, causal)
    return ops.sparse_dsd(probs, v, lut, block, False)


@pytest.mark.parametrize("causal", [False, True])
def test_fused_op_equals_the_building_blocks_composed(causal):
    block, seq = 16, 96
    lut = layout_lut(BigBirdSparsityConfig(HEADS, block, seed=8).make_layout(seq), torch.device("cpu"))
    q, k, v = inputs(2, seq, 8, seed=11)
    rpe, padding = torch.randn(HEADS, seq, seq), torch.zeros(2, seq)
    padding[0, -7:] = -10000.0
    keep = (torch.rand(seq, seq, generator=torch.Generator().manual_seed(1)) > 0.1).float()
    fused = block_sparse_attention(q, k, v, lut, block, 0.3, rpe, padding, keep, "add", "mul", causal)
    composed = composed_attention(q, k, v, lut, block, 0.3, rpe, padding, keep, causal)
    torch.testing.assert_close(fused, composed, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(fused)
    for got, want in zip(torch.autograd.grad(fused, (q, k, v), grad), torch.autograd.grad(composed, (q, k, v), grad)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_torch_compile_traces_the_ops():
    config = FixedSparsityConfig(HEADS, 16, num_local_blocks=2)
    module = SparseSelfAttention(config, max_seq_length=64)
    q, k, v = (t.detach() for t in inputs(1, 64, 8))
    expected = module(q, k, v)  # builds the look-up table, which the compiled graph then reads
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), expected)


def test_opcheck():
    lut = layout_lut(FixedSparsityConfig(HEADS, 16, num_local_blocks=2).make_layout(64), torch.device("cpu"))
    q, k, v = (t.detach() for t in inputs(1, 64, 8))
    ops = sparse_attention_ops()
    scores = ops.sparse_sdd(q, k, lut, 16)
    masks = (None, None, None, 1, 2, False)
    for op, args in [(ops.sparse_sdd, (q, k, lut, 16)), (ops.sparse_dsd, (scores, v, lut, 16, False)),
                     (ops.sparse_softmax, (scores, lut, HEADS, 64, 16, 0.5, *masks)),
                     (ops.sparse_attention, (q, k, v, lut, 16, 0.5, *masks)),
                     (ops.sparse_attention_backward, (torch.randn_like(q), q, k, v, lut, 16, 0.5, *masks))]:
        torch.library.opcheck(op, args)


def test_bad_input_names_the_problem():
    module = SparseSelfAttention(FixedSparsityConfig(HEADS, 16), max_seq_length=128)
    q = torch.randn(1, HEADS, 40, 8)
    with pytest.raises(ValueError, match="pad_to_block_size"):
        module(q, q, q)
    q = torch.randn(1, 3, 32, 8)
    with pytest.raises(ValueError, match="3 heads but the sparsity config has 2"):
        module(q, q, q)
    q = torch.randn(1, HEADS, 32, 8)
    with pytest.raises(TypeError, match="float dtype"):
        module(q.int(), q.int(), q.int())
    with pytest.raises(ValueError, match="exceeds max_seq_length"):
        module(*(torch.randn(1, HEADS, 256, 8),) * 3)
    lut = layout_lut(FixedSparsityConfig(4, 16).make_layout(64), torch.device("cpu"))
    with pytest.raises(RuntimeError, match="another number of heads or blocks"):
        sparse_attention_ops().sparse_sdd(q, q, lut, 16)
    good_lut = layout_lut(FixedSparsityConfig(HEADS, 16).make_layout(32), torch.device("cpu"))
    with pytest.raises(RuntimeError, match="value must have the query's shape, dtype and device"):
        sparse_attention_ops().sparse_attention(q, q, q.double(), good_lut, 16, 1.0, None, None, None, 1, 2, False)
    with pytest.raises(ValueError, match="key_padding_mask_mode"):
        SparseSelfAttention(FixedSparsityConfig(HEADS), key_padding_mask_mode="max")


def test_layouts_are_deepspeeds_and_reproducible():
    fixed = FixedSparsityConfig(1, 16, num_local_blocks=4).make_layout(160)[0]
    assert fixed[:, 3].all() and fixed[:, 7].all() and fixed[:, 9].all()  # a window's last block is global
    assert fixed[0, :4].all() and not fixed[0, 4:7].any()
    unidirectional = FixedSparsityConfig(1, 16, num_local_blocks=4, attention="unidirectional").make_layout(128)[0]
    assert torch.equal(unidirectional, unidirectional.tril())
    assert torch.equal(BigBirdSparsityConfig(2, 16, seed=5).make_layout(256), BigBirdSparsityConfig(
        2, 16, seed=5).make_layout(256))
    with pytest.raises(ValueError, match="pad_to_block_size"):
        FixedSparsityConfig(1, 16).make_layout(100)


def test_config_section_builds_the_matching_class():
    config = sparsity_config_from({"mode": "bigbird", "block": 32, "num_random_blocks": 2, "num_local_blocks": 4}, 8)
    assert isinstance(config, BigBirdSparsityConfig) and config.block == 32 and config.num_random_blocks == 2
    assert isinstance(sparsity_config_from({}, 4), FixedSparsityConfig)
    from deepspeed_ext import ConfigError
    with pytest.raises(ConfigError, match="sparse_attention.mode"):
        sparsity_config_from({"mode": "sparse"}, 4)
    with pytest.raises(ConfigError, match="unknown keys"):
        sparsity_config_from({"mode": "fixed", "num_locals": 3}, 4)


class BertConfig:
    hidden_size, num_attention_heads, max_position_embeddings = 32, HEADS, 64


class DenseBertSelfAttention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query, self.key, self.value = (torch.nn.Linear(32, 32) for _ in range(3))


class TinyBert(torch.nn.Module):
    """The attribute layout of a Hugging Face BERT that the utilities rely on."""

    def __init__(self) -> None:
        super().__init__()
        self.config = BertConfig()
        self.bert = torch.nn.Module()
        self.bert.embeddings = torch.nn.Module()
        self.bert.embeddings.position_embeddings = torch.nn.Embedding(64, 32)
        self.bert.encoder = torch.nn.Module()
        layer = torch.nn.Module()
        layer.attention = torch.nn.Module()
        layer.attention.self = DenseBertSelfAttention()
        self.bert.encoder.layer = torch.nn.ModuleList([layer])


def test_utils_adapt_a_bert_style_model():
    model = TinyBert()
    dense = model.bert.encoder.layer[0].attention.self
    SparseAttentionUtils.extend_position_embedding(model, 160)
    weight = model.bert.embeddings.position_embeddings.weight
    assert weight.shape == (160, 32) and torch.equal(weight[64:128], weight[:64])
    SparseAttentionUtils.replace_model_self_attention_with_sparse_self_attention(
        model, 160, FixedSparsityConfig(HEADS, 16, num_local_blocks=2))
    sparse = model.bert.encoder.layer[0].attention.self
    assert isinstance(sparse, BertSparseSelfAttention) and sparse.query is dense.query
    ids, mask = torch.randint(0, 100, (2, 50)), torch.ones(2, 50, dtype=torch.long)
    pad, ids, mask, _, _, _ = SparseAttentionUtils.pad_to_block_size(16, ids, mask, None, None, None, 0, None)
    assert pad == 14 and ids.shape == (2, 64) and mask[:, 50:].sum() == 0
    hidden = torch.randn(2, 64, 32)
    extended = (1.0 - mask[:, None, None, :].float()) * -10000.0
    (context,) = sparse(hidden, extended)
    assert context.shape == (2, 64, 32)
    assert SparseAttentionUtils.unpad_sequence_output(pad, context).shape == (2, 50, 32)


LAYOUTS = json.loads((Path(__file__).parent / "data" / "sparsity_layouts.json").read_text())["cases"]


@pytest.mark.parametrize("case", LAYOUTS, ids=[f"{c['class']}-{c['seed']}" for c in LAYOUTS])
def test_layouts_equal_deepspeeds(case):
    """Every layout class and option against the layout DeepSpeed's own code made (stored by
    tests/ops/data/make_sparsity_layouts.py; random draws after random.seed(seed))."""
    config = getattr(sparse_attention, case["class"])(**case["options"], seed=case["seed"])
    expected = torch.tensor([[[int(v) for v in row] for row in head] for head in case["layout"]])
    layout = config.make_layout(case["seq_len"])
    assert layout.shape == expected.shape
    assert torch.equal(layout.long(), expected), (layout - expected).nonzero().tolist()[:10]


@pytest.mark.parametrize("name", ["dense", "fixed"])
@pytest.mark.parametrize(("tensor", "value"), [("q", float("nan")), ("q", float("inf")), ("k", float("inf")),
                                               ("k", float("nan")), ("v", float("nan"))])
def test_nan_and_inf_propagate_as_in_dense_attention(name, tensor, value):
    """A NaN or inf reaches exactly the outputs that attend to it. (A key a query does not
    attend to never reaches it, where dense masked attention would still give NaN through
    0 x NaN: with the dense layout, every query attends to every key.)"""
    config = configs(16, "bidirectional")[name]
    seq = 64
    module = SparseSelfAttention(config, max_seq_length=seq)
    q, k, v = (t.detach() for t in inputs(1, seq, 8, seed=11))
    {"q": q, "k": k, "v": v}[tensor][0, 0, 5, 0] = value
    out = module(q, k, v)
    layout = module.get_layout(seq)
    allowed = layout.repeat_interleave(16, 1).repeat_interleave(16, 2).bool()
    logits = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(8)
    probs = torch.softmax(logits.masked_fill(~allowed, float("-inf")), -1)
    expected = torch.einsum("bhqk,bhkd->bhqd", probs, v.double())  # no 0 x NaN from keys a query skips...
    if tensor == "v":  # ...which einsum's matmul would still do: spell out which outputs see key 5's value
        sees = allowed[:, :, 5] if name != "dense" else torch.ones_like(allowed[:, :, 5])
        finite = torch.einsum("bhqk,bhkd->bhqd", probs, v.double().nan_to_num(0.0))
        expected = torch.where(torch.isnan(v[:, :, 5:6, :]) & sees[None, :, :, None],
                               torch.full_like(expected, float("nan")), finite)
    assert out.isnan().any()
    assert torch.equal(out.isnan(), expected.isnan())
    torch.testing.assert_close(out.nan_to_num(0.0), expected.to(out.dtype).nan_to_num(0.0), rtol=1e-5, atol=1e-5)


def test_a_meta_tensor_among_real_ones_is_refused():
    module = SparseSelfAttention(configs(16, "bidirectional")["fixed"], max_seq_length=64)
    q, k, v = (t.detach() for t in inputs(1, 64, 8))
    with pytest.raises(RuntimeError, match="every tensor must be on one device, got cpu, meta"):
        module(q, k.to("meta"), v)
    assert module(q.to("meta"), k.to("meta"), v.to("meta")).is_meta  # all meta: shapes only, for tracing
