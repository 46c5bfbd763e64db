// Registers AioHandle as torch.classes.deepspeed_ext.AioHandle (the Python glue in
// deepspeed_ext/ops/aio gives it DeepSpeed's keyword arguments and sync / async names).
#include <torch/library.h>

#include "aio_handle.h"

TORCH_LIBRARY_FRAGMENT(deepspeed_ext, m) {
  using ds::aio::AioHandle;
  m.class_<AioHandle>("AioHandle")
      .def(torch::init<int64_t, int64_t, bool, bool, int64_t>())
      .def("get_block_size", &AioHandle::get_block_size)
      .def("get_queue_depth", &AioHandle::get_queue_depth)
      .def("get_single_submit", &AioHandle::get_single_submit)
      .def("get_overlap_events", &AioHandle::get_overlap_events)
      .def("get_intra_op_parallelism", &AioHandle::get_intra_op_parallelism)
      .def("get_alignment", &AioHandle::get_alignment)
      .def("pread", &AioHandle::pread)
      .def("pwrite", &AioHandle::pwrite)
      .def("write", &AioHandle::write)
      .def("wait", &AioHandle::wait)
      .def("new_cpu_locked_tensor", &AioHandle::new_cpu_locked_tensor)
      .def("free_cpu_locked_tensor", &AioHandle::free_cpu_locked_tensor);
}
