#pragma once
// What the torch-facing CUDA impl (sparse_attention_cuda.cpp) hands the kernels
// (sparse_attention.cu): the CPU kernels' job structs, so the .cu file needs no torch headers.
#include <cuda_runtime_api.h>

#include "sparse_attention.h"

namespace ds::sparse_attention {

cudaError_t launch_sdd(const SddJob& job, const Lut& lut, const Shape& shape, cudaStream_t stream);
cudaError_t launch_dsd(const DsdJob& job, const Lut& lut, const Shape& shape, cudaStream_t stream);
cudaError_t launch_softmax(const SoftmaxJob& job, const Lut& lut, const Shape& shape, cudaStream_t stream);
cudaError_t launch_softmax_grad(const SoftmaxGradJob& job, const Lut& lut, const Shape& shape, cudaStream_t stream);

}  // namespace ds::sparse_attention
