// The zero_gather op library: schemas and CPU impls of flatten_into (many tensors -> one
// flat buffer at given offsets, gaps zeroed) and unflatten_from (one flat buffer -> many
// tensors). The copies of all tensors are split into ranges that OpenMP spreads across
// torch's threads, so many small tensors cost one parallel pass, not one call each.
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "zero_gather_plan.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ds::zero {
namespace {

constexpr int64_t kRangeBytes = 1 << 20;

// Runs copy(piece index, byte begin, byte count) over every byte of every piece, in ranges
// spread across threads.
template <class Copy>
void for_each_range(const std::vector<Piece>& pieces, Copy copy) {
  struct Range { size_t piece; int64_t begin, bytes; };
  std::vector<Range> ranges;
  for (size_t i = 0; i < pieces.size(); ++i)
    for (int64_t b = 0; b < pieces[i].bytes; b += kRangeBytes)
      ranges.push_back({i, b, std::min(kRangeBytes, pieces[i].bytes - b)});
  const int64_t count = static_cast<int64_t>(ranges.size());
#pragma omp parallel for schedule(dynamic, 4) if (count > 1)
  for (int64_t r = 0; r < count; ++r) copy(ranges[r].piece, ranges[r].begin, ranges[r].bytes);
}

void flatten_into_cpu(const at::Tensor& flat, at::TensorList tensors, at::IntArrayRef offsets) {
  std::vector<Piece> pieces;
  std::vector<Gap> gaps;
  plan("flatten_into", flat, tensors, offsets, &pieces, &gaps);
  char* base = static_cast<char*>(flat.data_ptr());
  for (const Gap& gap : gaps) std::memset(base + gap.flat_offset, 0, gap.bytes);
  for_each_range(pieces, [&](size_t i, int64_t begin, int64_t bytes) {
    std::memcpy(base + pieces[i].flat_offset + begin, pieces[i].tensor + begin, bytes);
  });
}

void unflatten_from_cpu(const at::Tensor& flat, at::TensorList tensors, at::IntArrayRef offsets) {
  std::vector<Piece> pieces;
  std::vector<Gap> gaps;
  plan("unflatten_from", flat, tensors, offsets, &pieces, &gaps);
  const char* base = static_cast<const char*>(flat.data_ptr());
  for_each_range(pieces, [&](size_t i, int64_t begin, int64_t bytes) {
    std::memcpy(pieces[i].tensor + begin, base + pieces[i].flat_offset + begin, bytes);
  });
}

}  // namespace
}  // namespace ds::zero

TORCH_LIBRARY_FRAGMENT(deepspeed_ext, m) {
  m.def("flatten_into(Tensor(a!) flat, Tensor[] tensors, int[] offsets) -> ()");
  m.def("unflatten_from(Tensor flat, Tensor(a!)[] tensors, int[] offsets) -> ()");
}

TORCH_LIBRARY_IMPL(deepspeed_ext, CPU, m) {
  m.impl("flatten_into", &ds::zero::flatten_into_cpu);
  m.impl("unflatten_from", &ds::zero::unflatten_from_cpu);
}
