"""ZeRO flat buffers: flatten / unflatten against torch's own flattening and slicing, the
partition arithmetic (uneven worlds, straddling tensors), a 3-rank gloo gather, bad input."""

import pytest
import torch
from torch._utils import _flatten_dense_tensors

import deepspeed_ext
from deepspeed_ext.ops.zero_gather import FlatLayout, flatten, gather_partitions, unflatten, zero_gather_ops
from tests.ranks import run_ranks

SHAPES = [(3, 4), (1,), (1000,), (7, 9, 2), (0,), (300_001,), (5,)]


def tensors_of(dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator).to(dtype) for shape in SHAPES]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int8])
def test_flatten_matches_torch_and_unflatten_round_trips(dtype):
    tensors = tensors_of(dtype)
    flat, layout = flatten(tensors)
    assert torch.equal(flat, _flatten_dense_tensors(tensors))
    for view, original in zip(unflatten(flat, layout), tensors):
        assert torch.equal(view, original)
        assert view.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()  # a view into flat
    copies = unflatten(flat, layout, into=[torch.empty_like(t) for t in tensors])
    assert all(torch.equal(c, t) for c, t in zip(copies, tensors))


@pytest.mark.parametrize("alignment, world_size", [(1, 3), (16, 2), (64, 3), (7, 5)])
def test_alignment_padding_and_partitions(alignment, world_size):
    tensors = tensors_of()
    flat, layout = flatten(tensors, alignment=alignment, world_size=world_size)
    assert all(offset % alignment == 0 for offset in layout.offsets)
    assert layout.total % (alignment * world_size) == 0
    covered = torch.zeros(layout.total, dtype=torch.bool)
    for t, offset in zip(tensors, layout.offsets):
        assert torch.equal(flat[offset:offset + t.numel()], t.flatten())
        covered[offset:offset + t.numel()] = True
    assert torch.count_nonzero(flat[~covered]) == 0  # gaps and padding are zeros
    seen = torch.zeros(layout.total, dtype=torch.int32)
    for rank in range(world_size):
        part = layout.partition(rank)
        assert part.end - part.start == layout.partition_size
        for index, first, count, at in part.pieces:  # each piece is the tensor's slice at that spot
            assert torch.equal(flat[part.start + at:part.start + at + count],
                               tensors[index].flatten()[first:first + count])
            seen[part.start + at:part.start + at + count] += 1
    assert torch.equal(seen.bool(), covered) and seen.max() <= 1  # every element in exactly one partition


def test_straddling_tensor_is_split_between_ranks():
    layout = FlatLayout.of([torch.empty(5), torch.empty(10)], world_size=3)
    assert layout.total == 15 and layout.partition_size == 5
    assert layout.partition(1).pieces == ((1, 0, 5, 0),)
    assert layout.partition(2).pieces == ((1, 5, 5, 0),)


def test_op_passes_opcheck_and_rejects_bad_input():
    ops = zero_gather_ops()
    tensors = [torch.randn(4), torch.randn(3)]
    torch.library.opcheck(ops.flatten_into.default, (torch.empty(8), tensors, [0, 4]))
    torch.library.opcheck(ops.unflatten_from.default, (torch.randn(8), tensors, [0, 4]))
    with pytest.raises(RuntimeError, match=r"offsets\[1\]=2 overlaps the tensor before it"):
        ops.flatten_into(torch.empty(8), tensors, [0, 2])
    with pytest.raises(RuntimeError, match=r"tensors\[1\] \(3 elements at 6\) runs past the end of flat"):
        ops.flatten_into(torch.empty(8), tensors, [0, 6])
    with pytest.raises(RuntimeError, match=r"tensors\[0\] has dtype Half but flat has Float"):
        ops.unflatten_from(torch.empty(8), [torch.empty(4, dtype=torch.half)], [0])
    with pytest.raises(RuntimeError, match=r"tensors\[0\] is not contiguous"):
        ops.unflatten_from(torch.empty(8), [torch.empty(8)[::2]], [0])
    with pytest.raises(RuntimeError, match="got 2 tensors but 1 offsets"):
        ops.flatten_into(torch.empty(8), tensors, [0])
    with pytest.raises(ValueError, match="rank 3 is outside a layout of 3 partitions"):
        FlatLayout.of(tensors, world_size=3).partition(3)
    with pytest.raises(ValueError, match="shard has 2 elements"):
        gather_partitions(torch.empty(2), FlatLayout.of(tensors, world_size=1))


MIXED = "every tensor must be on one device, got cpu, meta"  # the fake kernel, where such calls are dispatched


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: flatten([torch.ones(3), torch.ones(2, device="meta")]), RuntimeError, MIXED),
    (lambda: flatten([torch.ones(3, device="meta")], out=torch.empty(3)), RuntimeError, MIXED),
    (lambda: flatten([torch.ones(3), torch.ones(2, dtype=torch.float64)]), RuntimeError,
     r"tensors\[1\] has dtype Double but flat has Float"),
    (lambda: flatten([torch.ones(3).to_sparse()]), ValueError, r"flatten: tensors\[0\] has layout torch.sparse_coo"),
    (lambda: flatten([torch.ones(3), [1.0]]), TypeError, r"flatten: tensors\[1\] must be a tensor"),
    (lambda: flatten([torch.ones(3)], world_size=10**12), ValueError, "world_size must be an integer from 1 to"),
    (lambda: flatten([torch.ones(3)], alignment=0), ValueError, "alignment must be an integer from 1 to"),
    (lambda: flatten([torch.ones(3)], world_size=2.5), ValueError, "world_size must be an integer"),
    (lambda: unflatten(torch.empty(4), FlatLayout.of([torch.ones(4)]), into=[torch.empty(4, device="meta")]),
     RuntimeError, MIXED),
    (lambda: zero_gather_ops().flatten_into(torch.empty(4), [torch.ones(4, device="meta")], [0]), RuntimeError,
     MIXED),
])
def test_bad_tensors_are_refused_before_any_copy(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_meta_tensors_alone_give_a_meta_buffer():
    flat, layout = flatten([torch.ones(3, device="meta"), torch.ones(5, device="meta")], alignment=4)
    assert flat.is_meta and flat.numel() == layout.total == 12


def gather_on_rank() -> tuple:
    """Each rank keeps only its partition of the flat buffer, then gathers the whole."""
    deepspeed_ext.init_distributed(verbose=False)
    flat, layout = flatten(tensors_of(), alignment=8, world_size=3)
    part = layout.partition(torch.distributed.get_rank())
    shard = flat[part.start:part.end].clone()
    return gather_partitions(shard, layout), flat


def test_three_ranks_gather_their_uneven_partitions():
    for full, flat in run_ranks(gather_on_rank, 3):
        assert torch.equal(full, flat)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_copies_match_the_cpu():
    tensors = tensors_of() + [torch.randn(320 * 16384 + 3)]  # more chunks than one launch holds
    flat, layout = flatten(tensors, alignment=4, world_size=2)
    flat_cuda, _ = flatten([t.cuda() for t in tensors], alignment=4, world_size=2)
    assert torch.equal(flat_cuda.cpu(), flat)
    back = unflatten(flat_cuda, layout, into=[torch.empty_like(t).cuda() for t in tensors])
    assert all(torch.equal(b.cpu(), t) for b, t in zip(back, tensors))
