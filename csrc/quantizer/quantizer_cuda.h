#pragma once
// What the torch-facing CUDA impl (quantizer_cuda.cpp) hands the kernels (quantizer.cu):
// the CPU kernels' job structs, so the .cu file needs no torch headers.
#include <cuda_runtime_api.h>

#include "quantizer.h"

namespace ds::quantizer {

// One block a group. *bad_group (initialised to INT64_MAX) receives the lowest index of a
// group holding inf or NaN.
cudaError_t launch_quantize(const QuantizeJob& job, int64_t groups, unsigned long long* bad_group,
                            cudaStream_t stream);

cudaError_t launch_dequantize(const DequantizeJob& job, int64_t groups, cudaStream_t stream);

}  // namespace ds::quantizer
