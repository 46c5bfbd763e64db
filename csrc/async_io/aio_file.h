#pragma once
// Opening the files a transfer reads or writes, and errors that name them.
//
// Each file is opened twice: with O_DIRECT for the aligned bulk of a transfer (no page cache,
// DMA straight from the caller's buffer), and without it for what O_DIRECT cannot do (an
// unaligned file offset, a write whose length ends mid-sector). Filesystems without O_DIRECT
// (tmpfs, procfs) get buffered I/O only.
#include <cstdint>
#include <memory>
#include <string>

namespace ds::aio {

constexpr int64_t kAlignment = 4096;  // O_DIRECT buffer, offset and length alignment

inline bool is_aligned(int64_t value) { return value % kAlignment == 0; }
inline bool is_aligned(const void* pointer) { return is_aligned(reinterpret_cast<int64_t>(pointer)); }
inline int64_t align_up(int64_t value) { return (value + kAlignment - 1) / kAlignment * kAlignment; }

// "aio: <what> '<path>' at offset <offset>: <strerror> (errno <n>)", raised as c10::Error;
// the Python glue turns the errno into an OSError.
[[noreturn]] void throw_io_error(const std::string& what, const std::string& path, int64_t offset, int error);

enum class Access { read, write, write_truncate };

struct OpenFile {
  std::string path;
  int direct_fd = -1;  // -1 when the filesystem refuses O_DIRECT
  int buffered_fd = -1;
  ~OpenFile();
};

// Opens `path`; for reads also checks it is a regular file holding [offset, offset + bytes).
std::shared_ptr<OpenFile> open_file(const std::string& path, Access access, int64_t offset, int64_t bytes);

}  // namespace ds::aio
