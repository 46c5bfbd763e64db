#pragma once
// Turns (flat buffer, tensors, element offsets) into checked byte pieces and gaps; shared
// by the CPU and CUDA impls of flatten_into / unflatten_from.
#include <ATen/core/Tensor.h>

#include <vector>

#include "zero_gather_pieces.h"

namespace ds::zero {

// Checks device, dtype, contiguity, order and bounds (errors name `op` and the index).
void plan(const char* op, const at::Tensor& flat, at::TensorList tensors, at::IntArrayRef offsets,
          std::vector<Piece>* pieces, std::vector<Gap>* gaps);

}  // namespace ds::zero
