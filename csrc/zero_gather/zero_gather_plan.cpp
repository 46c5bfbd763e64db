#include "zero_gather_plan.h"

#include <c10/util/Exception.h>

namespace ds::zero {

void plan(const char* op, const at::Tensor& flat, at::TensorList tensors, at::IntArrayRef offsets,
          std::vector<Piece>* pieces, std::vector<Gap>* gaps) {
  TORCH_CHECK(flat.dim() == 1 && flat.is_contiguous(), op, ": flat must be a contiguous 1-D tensor");
  TORCH_CHECK(tensors.size() == offsets.size(), op, ": got ", tensors.size(), " tensors but ", offsets.size(),
              " offsets");
  const int64_t element = flat.element_size();
  int64_t covered = 0;  // pieces must come in order and must not overlap
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    TORCH_CHECK(t.device() == flat.device(), op, ": tensors[", i, "] is on ", t.device(), " but flat is on ",
                flat.device());
    TORCH_CHECK(t.scalar_type() == flat.scalar_type(), op, ": tensors[", i, "] has dtype ", t.scalar_type(),
                " but flat has ", flat.scalar_type());
    TORCH_CHECK(t.is_contiguous(), op, ": tensors[", i, "] is not contiguous");
    TORCH_CHECK(offsets[i] >= covered, op, ": offsets[", i, "]=", offsets[i], " overlaps the tensor before it "
                "(offsets must increase and leave room for each tensor)");
    TORCH_CHECK(offsets[i] + t.numel() <= flat.numel(), op, ": tensors[", i, "] (", t.numel(), " elements at ",
                offsets[i], ") runs past the end of flat (", flat.numel(), " elements)");
    if (offsets[i] > covered) gaps->push_back({covered * element, (offsets[i] - covered) * element});
    pieces->push_back({static_cast<char*>(t.data_ptr()), offsets[i] * element, t.numel() * element});
    covered = offsets[i] + t.numel();
  }
  if (flat.numel() > covered) gaps->push_back({covered * element, (flat.numel() - covered) * element});
}

}  // namespace ds::zero
