#include "aio_file.h"

#include <c10/util/Exception.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ds::aio {

void throw_io_error(const std::string& what, const std::string& path, int64_t offset, int error) {
  TORCH_CHECK(false, "aio: ", what, " '", path, "' at offset ", offset, ": ", std::strerror(error), " (errno ", error,
              ")");
}

OpenFile::~OpenFile() {
  if (direct_fd >= 0) close(direct_fd);
  if (buffered_fd >= 0) close(buffered_fd);
}

std::shared_ptr<OpenFile> open_file(const std::string& path, Access access, int64_t offset, int64_t bytes) {
  auto file = std::make_shared<OpenFile>();
  file->path = path;
  const bool reading = access == Access::read;
  const int flags = reading ? O_RDONLY : (O_RDWR | O_CREAT | (access == Access::write_truncate ? O_TRUNC : 0));
  file->buffered_fd = open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (file->buffered_fd < 0) throw_io_error(reading ? "cannot open for reading" : "cannot open for writing", path,
                                            offset, errno);
  struct stat info {};
  if (fstat(file->buffered_fd, &info) != 0) throw_io_error("cannot stat", path, offset, errno);
  if (S_ISDIR(info.st_mode)) throw_io_error("cannot transfer to or from", path, offset, EISDIR);
  // Size 0 may be a file the kernel makes up as it is read (procfs): let the read find out.
  if (reading && S_ISREG(info.st_mode) && info.st_size > 0 && info.st_size < offset + bytes)
    TORCH_CHECK(false, "aio: cannot read ", bytes, " bytes from '", path, "' at offset ", offset, ": the file is only ",
                info.st_size, " bytes: ", std::strerror(ENODATA), " (errno ", ENODATA, ")");
  // O_TRUNC happened above; the direct descriptor must not truncate again what the first wrote.
  file->direct_fd = open(path.c_str(), (flags & ~O_TRUNC) | O_DIRECT | O_CLOEXEC, 0644);
  return file;
}

}  // namespace ds::aio
