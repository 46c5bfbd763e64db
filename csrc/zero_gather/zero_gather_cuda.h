#pragma once
// Launch interface of the CUDA copy kernels (zero_gather.cu), free of torch headers.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "zero_gather_pieces.h"

namespace ds::zero {

constexpr int kMaxPieces = 48;
constexpr int kMaxBlocks = 320;
constexpr int64_t kChunkBytes = 1 << 16;

// One launch: block b copies chunk block_chunk[b] of piece block_piece[b].
struct CopyBatch {
  Piece pieces[kMaxPieces];
  uint8_t block_piece[kMaxBlocks];
  int32_t block_chunk[kMaxBlocks];
  int num_pieces;
  int num_blocks;
};

cudaError_t launch_copy_batch(const CopyBatch& batch, char* flat, bool to_flat, cudaStream_t stream);

}  // namespace ds::zero
