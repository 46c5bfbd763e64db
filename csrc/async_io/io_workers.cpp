#include "io_workers.h"

#include <c10/util/Exception.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace ds::aio {
namespace {

std::string describe_error(const Transfer& transfer, int64_t position, int error) {
  std::ostringstream message;
  message << "aio: " << (transfer.is_read ? "reading" : "writing") << " '" << transfer.file->path << "' at offset "
          << transfer.file_offset + position << " failed: " << std::strerror(error) << " (errno " << error << ")";
  return message.str();
}

// A request's buffer must not move while the kernel owns it: each slot keeps its own.
struct Slot {
  iocb request{};
  char* bounce = nullptr;  // aligned block for unaligned caller buffers, allocated on first use
  int64_t position = 0, length = 0;
  bool bounced = false;
  ~Slot() { std::free(bounce); }
};

class PartRunner {
 public:
  PartRunner(io_context_t context, const IoConfig& config) : context_(context), config_(config),
      slots_(config.queue_depth), events_(config.queue_depth) {
    for (auto& slot : slots_) free_.push_back(&slot);
  }

  void run(Transfer& transfer, int64_t begin, int64_t end) {
    int64_t next = begin;
    int in_flight = 0;
    std::vector<iocb*> batch;
    while ((next < end && !transfer.failed()) || in_flight > 0) {
      batch.clear();
      while (next < end && !transfer.failed() && !free_.empty()) {
        const int64_t length = std::min(config_.block_size, end - next);
        Slot* slot = free_.back();
        if (prepare(transfer, next, length, *slot)) {
          free_.pop_back();
          batch.push_back(&slot->request);
        } else {
          transfer_buffered(transfer, next, length);
        }
        next += length;
      }
      in_flight += submit(transfer, batch);
      if (in_flight > 0) in_flight -= reap(transfer, config_.overlap_events ? 1 : in_flight);
    }
  }

 private:
  // The request for one block through O_DIRECT, from the caller's buffer or a bounce block;
  // false when only buffered I/O can do it (no O_DIRECT, unaligned file offset, or a write
  // ending mid-sector, which O_DIRECT would pad with whatever the bounce block holds).
  bool prepare(Transfer& transfer, int64_t position, int64_t length, Slot& slot) {
    const int fd = transfer.file->direct_fd;
    const int64_t offset = transfer.file_offset + position;
    char* data = transfer.buffer + position;
    if (fd < 0 || !is_aligned(offset) || (!transfer.is_read && !is_aligned(length))) return false;
    slot.position = position;
    slot.length = length;
    slot.bounced = !is_aligned(data) || !is_aligned(length);
    char* target = data;
    if (slot.bounced) {
      if (slot.bounce == nullptr && posix_memalign(reinterpret_cast<void**>(&slot.bounce), kAlignment,
                                                   align_up(config_.block_size)) != 0) {
        slot.bounce = nullptr;
        return false;
      }
      target = slot.bounce;
      if (!transfer.is_read) std::memcpy(target, data, length);
    }
    // A bounced read asks for whole sectors: past the end of the file it just comes back short.
    if (transfer.is_read)
      io_prep_pread(&slot.request, fd, target, align_up(length), offset);
    else
      io_prep_pwrite(&slot.request, fd, target, length, offset);
    slot.request.data = &slot;
    return true;
  }

  void transfer_buffered(Transfer& transfer, int64_t position, int64_t length) {
    const int fd = transfer.file->buffered_fd;
    for (int64_t done = 0; done < length;) {
      const int64_t at = position + done;
      const ssize_t moved = transfer.is_read
          ? pread(fd, transfer.buffer + at, length - done, transfer.file_offset + at)
          : pwrite(fd, transfer.buffer + at, length - done, transfer.file_offset + at);
      if (moved < 0 && errno == EINTR) continue;
      if (moved <= 0) {
        transfer.fail(describe_error(transfer, at, moved < 0 ? errno : (transfer.is_read ? ENODATA : ENOSPC)));
        return;
      }
      done += moved;
    }
  }

  int submit(Transfer& transfer, std::vector<iocb*>& batch) {
    int submitted = 0;
    while (submitted < int(batch.size())) {
      const int count = config_.single_submit ? 1 : int(batch.size()) - submitted;
      const int result = io_submit(context_, count, batch.data() + submitted);
      if (result == -EINTR || result == -EAGAIN) continue;
      if (result < 0) {
        Slot* slot = static_cast<Slot*>(batch[submitted]->data);
        transfer.fail(describe_error(transfer, slot->position, -result));
        for (size_t i = submitted; i < batch.size(); ++i) free_.push_back(static_cast<Slot*>(batch[i]->data));
        break;
      }
      submitted += result;
    }
    return submitted;
  }

  int reap(Transfer& transfer, int at_least) {
    int got;
    do {
      got = io_getevents(context_, at_least, int(events_.size()), events_.data(), nullptr);
    } while (got == -EINTR);
    TORCH_CHECK(got >= 0, "aio: io_getevents failed: ", std::strerror(-got));
    for (int i = 0; i < got; ++i) {
      Slot* slot = static_cast<Slot*>(events_[i].data);
      const long result = static_cast<long>(events_[i].res);
      if (result < 0) {
        transfer.fail(describe_error(transfer, slot->position, int(-result)));
      } else if (result < slot->length) {
        // Reads: the file ended early (it shrank); writes: the device took less (out of space).
        transfer.fail(describe_error(transfer, slot->position + result, transfer.is_read ? ENODATA : ENOSPC));
      } else if (slot->bounced && transfer.is_read) {
        std::memcpy(transfer.buffer + slot->position, slot->bounce, slot->length);
      }
      free_.push_back(slot);
    }
    return got;
  }

  io_context_t context_;
  const IoConfig& config_;
  std::vector<Slot> slots_;
  std::vector<Slot*> free_;
  std::vector<io_event> events_;
};

}  // namespace

void Transfer::fail(const std::string& message) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (error_.empty()) error_ = message;
}

bool Transfer::failed() {
  std::lock_guard<std::mutex> lock(mutex_);
  return !error_.empty();
}

void Transfer::add_parts(int count) {
  std::lock_guard<std::mutex> lock(mutex_);
  parts_left_ += count;
}

void Transfer::part_done() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (--parts_left_ == 0) done_.notify_all();
}

std::string Transfer::wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [&] { return parts_left_ == 0; });
  return error_;
}

IoWorkers::IoWorkers(const IoConfig& config) : config_(config) {
  for (int i = 0; i < config.threads; ++i) {
    io_context_t context = nullptr;
    const int result = io_setup(config.queue_depth, &context);
    if (result < 0) {
      for (io_context_t made : contexts_) io_destroy(made);
      TORCH_CHECK(false, "aio: io_setup(queue_depth=", config.queue_depth, ") failed: ", std::strerror(-result),
                  " (errno ", -result, "); lower queue_depth or intra_op_parallelism, or raise /proc/sys/fs/aio-max-nr");
    }
    contexts_.push_back(context);
  }
  for (io_context_t context : contexts_) threads_.emplace_back([this, context] { run(context); });
}

IoWorkers::~IoWorkers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (auto& thread : threads_) thread.join();
  for (io_context_t context : contexts_) io_destroy(context);
}

void IoWorkers::start(const std::shared_ptr<Transfer>& transfer) {
  // Contiguous runs of whole blocks, one per thread at most.
  const int64_t blocks = (transfer->bytes + config_.block_size - 1) / config_.block_size;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(config_.threads, blocks));
  transfer->add_parts(int(parts));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (int64_t p = 0; p < parts; ++p) {
      const int64_t begin = std::min(transfer->bytes, blocks * p / parts * config_.block_size);
      const int64_t end = std::min(transfer->bytes, blocks * (p + 1) / parts * config_.block_size);
      queue_.push_back({transfer, begin, end});
    }
  }
  ready_.notify_all();
}

void IoWorkers::run(io_context_t context) {
  PartRunner runner(context, config_);
  while (true) {
    Part part;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      part = std::move(queue_.front());
      queue_.pop_front();
    }
    try {
      runner.run(*part.transfer, part.begin, part.end);
    } catch (const std::exception& error) {
      part.transfer->fail(error.what());
    }
    part.transfer->part_done();
  }
}

}  // namespace ds::aio
