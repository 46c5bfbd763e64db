// CUDA impls of flatten_into / unflatten_from: zero the gaps with cudaMemsetAsync, then
// copy every piece in batched launches of zero_gather.cu on the current stream.
#include <torch/library.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "zero_gather_cuda.h"
#include "zero_gather_plan.h"

namespace ds::zero {
namespace {

void check_cuda(cudaError_t status, const char* op) {
  TORCH_CHECK(status == cudaSuccess, op, ": CUDA error: ", cudaGetErrorString(status));
}

void copy_cuda(const char* op, const at::Tensor& flat, at::TensorList tensors, at::IntArrayRef offsets,
               bool to_flat) {
  std::vector<Piece> pieces;
  std::vector<Gap> gaps;
  plan(op, flat, tensors, offsets, &pieces, &gaps);
  const c10::cuda::CUDAGuard guard(flat.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  char* base = static_cast<char*>(flat.data_ptr());
  if (to_flat) {
    for (const Gap& gap : gaps) check_cuda(cudaMemsetAsync(base + gap.flat_offset, 0, gap.bytes, stream), op);
  }
  CopyBatch batch{};
  auto listed_last = [&batch](const Piece& piece) {  // a piece split across launches is listed again
    return batch.num_pieces > 0 && batch.pieces[batch.num_pieces - 1].tensor == piece.tensor &&
           batch.pieces[batch.num_pieces - 1].flat_offset == piece.flat_offset;
  };
  for (const Piece& piece : pieces) {
    const int64_t chunks = (piece.bytes + kChunkBytes - 1) / kChunkBytes;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      if (batch.num_blocks == kMaxBlocks || (!listed_last(piece) && batch.num_pieces == kMaxPieces)) {
        check_cuda(launch_copy_batch(batch, base, to_flat, stream), op);
        batch = CopyBatch{};
      }
      if (!listed_last(piece)) batch.pieces[batch.num_pieces++] = piece;
      batch.block_piece[batch.num_blocks] = static_cast<uint8_t>(batch.num_pieces - 1);
      batch.block_chunk[batch.num_blocks] = static_cast<int32_t>(chunk);
      ++batch.num_blocks;
    }
  }
  check_cuda(launch_copy_batch(batch, base, to_flat, stream), op);
}

void flatten_into_cuda(const at::Tensor& flat, at::TensorList tensors, at::IntArrayRef offsets) {
  copy_cuda("flatten_into", flat, tensors, offsets, true);
}

void unflatten_from_cuda(const at::Tensor& flat, at::TensorList tensors, at::IntArrayRef offsets) {
  copy_cuda("unflatten_from", flat, tensors, offsets, false);
}

}  // namespace
}  // namespace ds::zero

TORCH_LIBRARY_IMPL(deepspeed_ext, CUDA, m) {
  m.impl("flatten_into", &ds::zero::flatten_into_cuda);
  m.impl("unflatten_from", &ds::zero::unflatten_from_cuda);
}
