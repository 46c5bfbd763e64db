#pragma once
// The threads that move bytes: each owns a libaio context of queue_depth requests and takes
// parts of transfers (contiguous runs of blocks) from a shared queue. Torch-free on purpose:
// the handle keeps the tensors alive, this layer sees only pointers.
#include <libaio.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "aio_file.h"

namespace ds::aio {

struct IoConfig {
  int64_t block_size;
  int queue_depth;      // requests in flight per thread
  bool single_submit;   // one io_submit call per request instead of one per batch
  bool overlap_events;  // refill the queue as each request completes, instead of batch by batch
  int threads;
};

// One read or write: the caller's bytes [buffer, buffer + bytes) to or from the file at
// file_offset, split into parts for the workers.
class Transfer {
 public:
  Transfer(std::shared_ptr<OpenFile> file, char* buffer, int64_t bytes, int64_t file_offset, bool is_read)
      : file(std::move(file)), buffer(buffer), bytes(bytes), file_offset(file_offset), is_read(is_read) {}

  const std::shared_ptr<OpenFile> file;
  char* const buffer;
  const int64_t bytes, file_offset;
  const bool is_read;

  void fail(const std::string& message);  // the first failure is kept
  bool failed();
  void add_parts(int count);
  void part_done();
  // Blocks until every part has finished (a failed transfer still drains what is in flight);
  // returns the first failure, or "".
  std::string wait();

 private:
  std::mutex mutex_;
  std::condition_variable done_;
  int parts_left_ = 0;
  std::string error_;
};

class IoWorkers {
 public:
  explicit IoWorkers(const IoConfig& config);
  ~IoWorkers();
  IoWorkers(const IoWorkers&) = delete;
  IoWorkers& operator=(const IoWorkers&) = delete;

  const IoConfig& config() const { return config_; }
  void start(const std::shared_ptr<Transfer>& transfer);

 private:
  struct Part {
    std::shared_ptr<Transfer> transfer;
    int64_t begin, end;  // bytes of the transfer
  };
  void run(io_context_t context);

  const IoConfig config_;
  std::vector<io_context_t> contexts_;
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Part> queue_;
  bool stopping_ = false;
};

}  // namespace ds::aio
