#include "aio_handle.h"

#include <ATen/ops/from_blob.h>
#include <c10/util/Exception.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace ds::aio {
namespace {

IoConfig checked_config(int64_t block_size, int64_t queue_depth, bool single_submit, bool overlap_events,
                        int64_t threads) {
  TORCH_CHECK(block_size > 0, "aio_handle: block_size must be positive, got ", block_size);
  TORCH_CHECK(queue_depth > 0 && queue_depth <= 65536, "aio_handle: queue_depth must be in 1..65536, got ",
              queue_depth);
  TORCH_CHECK(threads > 0 && threads <= 1024, "aio_handle: intra_op_parallelism must be in 1..1024, got ", threads);
  return {block_size, int(queue_depth), single_submit, overlap_events, int(threads)};
}

// The file's bytes [offset, offset + bytes) read back without O_DIRECT and compared.
std::string validation_error(const Transfer& transfer) {
  std::vector<char> stored(static_cast<size_t>(transfer.bytes));
  for (int64_t done = 0; done < transfer.bytes;) {
    const ssize_t got = pread(transfer.file->buffered_fd, stored.data() + done, transfer.bytes - done,
                              transfer.file_offset + done);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return "aio: validating '" + transfer.file->path + "': reading it back failed";
    done += got;
  }
  for (int64_t i = 0; i < transfer.bytes; ++i)
    if (stored[i] != transfer.buffer[i])
      return "aio: validation of '" + transfer.file->path + "' failed: the buffer and the file differ at file offset " +
             std::to_string(transfer.file_offset + i);
  return "";
}

}  // namespace

AioHandle::AioHandle(int64_t block_size, int64_t queue_depth, bool single_submit, bool overlap_events,
                     int64_t intra_op_parallelism)
    : workers_(checked_config(block_size, queue_depth, single_submit, overlap_events, intra_op_parallelism)) {}

int64_t AioHandle::pread(const at::Tensor& buffer, const std::string& filename, bool validate, bool async,
                         int64_t file_offset) {
  return run(buffer, filename, Access::read, validate, async, file_offset);
}

int64_t AioHandle::pwrite(const at::Tensor& buffer, const std::string& filename, bool validate, bool async,
                          int64_t file_offset) {
  return run(buffer, filename, Access::write, validate, async, file_offset);
}

int64_t AioHandle::write(const at::Tensor& buffer, const std::string& filename, bool validate) {
  return run(buffer, filename, Access::write_truncate, validate, false, 0);
}

int64_t AioHandle::run(const at::Tensor& buffer, const std::string& filename, Access access, bool validate, bool async,
                       int64_t file_offset) {
  TORCH_CHECK(buffer.device().is_cpu(), "aio: buffer must be a CPU tensor, got one on ", buffer.device(),
              "; copy GPU tensors through a CPU (pinned) buffer");
  TORCH_CHECK(buffer.is_contiguous(), "aio: buffer must be contiguous");
  TORCH_CHECK(file_offset >= 0, "aio: file_offset must be >= 0, got ", file_offset);
  const int64_t bytes = static_cast<int64_t>(buffer.nbytes());
  auto transfer = std::make_shared<Transfer>(open_file(filename, access, file_offset, bytes),
                                             static_cast<char*>(buffer.data_ptr()), bytes, file_offset,
                                             access == Access::read);
  workers_.start(transfer);
  Pending pending{transfer, buffer, validate};
  if (async) {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.push_back(std::move(pending));
    return 0;
  }
  const std::string error = finish(pending);
  TORCH_CHECK(error.empty(), error);
  return 0;
}

std::string AioHandle::finish(Pending& pending) {
  std::string error = pending.transfer->wait();
  if (error.empty() && pending.validate) error = validation_error(*pending.transfer);
  return error;
}

int64_t AioHandle::wait() {
  std::vector<Pending> pending;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pending.swap(pending_);
  }
  std::string first_error;
  for (auto& each : pending) {  // every transfer finishes before an error is raised
    const std::string error = finish(each);
    if (first_error.empty()) first_error = error;
  }
  TORCH_CHECK(first_error.empty(), first_error);
  return static_cast<int64_t>(pending.size());
}

at::Tensor AioHandle::new_cpu_locked_tensor(int64_t num_elem, const at::Tensor& example) {
  TORCH_CHECK(num_elem >= 0, "new_cpu_locked_tensor: num_elem must be >= 0, got ", num_elem);
  const size_t bytes = static_cast<size_t>(align_up(std::max<int64_t>(1, num_elem * example.element_size())));
  void* memory = nullptr;
  TORCH_CHECK(posix_memalign(&memory, kAlignment, bytes) == 0, "new_cpu_locked_tensor: cannot allocate ", bytes,
              " bytes");
  const bool locked = mlock(memory, bytes) == 0;
  if (!locked)
    TORCH_WARN_ONCE("new_cpu_locked_tensor: mlock failed (", std::strerror(errno),
                    "); the buffer is aligned but pageable. Raise the memlock limit (ulimit -l) to pin it.");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    locked_.insert(memory);
  }
  auto release = [bytes, locked](void* pointer) {
    if (locked) munlock(pointer, bytes);
    std::free(pointer);
  };
  return at::from_blob(memory, {num_elem}, release, example.options().device(at::kCPU));
}

bool AioHandle::free_cpu_locked_tensor(const at::Tensor& tensor) {
  std::lock_guard<std::mutex> lock(mutex_);
  return locked_.erase(tensor.data_ptr()) == 1;
}

}  // namespace ds::aio
