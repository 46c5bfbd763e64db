#pragma once
// A coalesced copy between one flat buffer and many tensors: what ZeRO does to flatten
// parameters and gradients and to cut a flat buffer back into per-parameter pieces.
// Plain byte ranges only, so the CPU and CUDA kernels need no torch headers.
#include <cstdint>

namespace ds::zero {

// Bytes [flat_offset, flat_offset + bytes) of the flat buffer <-> bytes [0, bytes) of a tensor.
struct Piece {
  char* tensor;
  int64_t flat_offset;
  int64_t bytes;
};

// Byte ranges of the flat buffer no piece covers (alignment gaps and tail padding).
struct Gap {
  int64_t flat_offset;
  int64_t bytes;
};

}  // namespace ds::zero
