// CUDA kernel of flatten_into / unflatten_from: many tensor <-> flat-buffer copies in one
// launch, 16-byte vector moves where both sides are aligned, 64-bit offsets.
#include <cstdint>

#include "zero_gather_cuda.h"

namespace ds::zero {
namespace {

__global__ void copy_batch_kernel(CopyBatch batch, char* flat, bool to_flat) {
  const Piece piece = batch.pieces[batch.block_piece[blockIdx.x]];
  const int64_t begin = int64_t(batch.block_chunk[blockIdx.x]) * kChunkBytes;
  const int64_t end = begin + kChunkBytes < piece.bytes ? begin + kChunkBytes : piece.bytes;
  char* destination = to_flat ? flat + piece.flat_offset : piece.tensor;
  const char* source = to_flat ? piece.tensor : flat + piece.flat_offset;
  const bool aligned = (reinterpret_cast<uintptr_t>(destination) | reinterpret_cast<uintptr_t>(source)) % 16 == 0;
  int64_t i = begin;
  if (aligned) {
    const int64_t vector_end = begin + ((end - begin) / 16) * 16;
    for (int64_t v = begin + int64_t(threadIdx.x) * 16; v < vector_end; v += int64_t(blockDim.x) * 16)
      *reinterpret_cast<uint4*>(destination + v) = *reinterpret_cast<const uint4*>(source + v);
    i = vector_end;
  }
  for (int64_t b = i + threadIdx.x; b < end; b += blockDim.x) destination[b] = source[b];
}

}  // namespace

cudaError_t launch_copy_batch(const CopyBatch& batch, char* flat, bool to_flat, cudaStream_t stream) {
  if (batch.num_blocks == 0) return cudaSuccess;
  copy_batch_kernel<<<batch.num_blocks, 256, 0, stream>>>(batch, flat, to_flat);
  return cudaGetLastError();
}

}  // namespace ds::zero
