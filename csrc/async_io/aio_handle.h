#pragma once
// DeepSpeed's aio_handle as a torch custom class (torch.classes.deepspeed_ext.AioHandle):
// reads and writes between CPU tensors and files, blocking or asynchronous. Torch invokes
// custom-class methods with the GIL released, so blocking calls let other Python threads run.
#include <ATen/core/Tensor.h>
#include <torch/custom_class.h>

#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "io_workers.h"

namespace ds::aio {

class AioHandle : public torch::CustomClassHolder {
 public:
  AioHandle(int64_t block_size, int64_t queue_depth, bool single_submit, bool overlap_events,
            int64_t intra_op_parallelism);

  int64_t get_block_size() const { return workers_.config().block_size; }
  int64_t get_queue_depth() const { return workers_.config().queue_depth; }
  bool get_single_submit() const { return workers_.config().single_submit; }
  bool get_overlap_events() const { return workers_.config().overlap_events; }
  int64_t get_intra_op_parallelism() const { return workers_.config().threads; }
  int64_t get_alignment() const { return kAlignment; }

  // Blocking calls return 0 once done; asynchronous ones return 0 at once and wait()
  // completes them. Failures raise (for asynchronous calls, from wait()).
  int64_t pread(const at::Tensor& buffer, const std::string& filename, bool validate, bool async, int64_t file_offset);
  int64_t pwrite(const at::Tensor& buffer, const std::string& filename, bool validate, bool async,
                 int64_t file_offset);
  // The whole file is the buffer: write truncates it to the buffer's size.
  int64_t write(const at::Tensor& buffer, const std::string& filename, bool validate);
  // Every asynchronous call so far, finished; returns how many there were.
  int64_t wait();

  at::Tensor new_cpu_locked_tensor(int64_t num_elem, const at::Tensor& example);
  bool free_cpu_locked_tensor(const at::Tensor& tensor);

 private:
  struct Pending {
    std::shared_ptr<Transfer> transfer;
    at::Tensor buffer;  // alive until the transfer is done
    bool validate;
  };
  int64_t run(const at::Tensor& buffer, const std::string& filename, Access access, bool validate, bool async,
              int64_t file_offset);
  static std::string finish(Pending& pending);

  IoWorkers workers_;
  std::mutex mutex_;  // Python threads may share a handle: the GIL is released in every call
  std::vector<Pending> pending_;
  std::set<const void*> locked_;
};

}  // namespace ds::aio
