"""Asynchronous direct file I/O through libaio (NVMe offload, ds_io)."""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile

from .builder import OpBuilder, cxx_compiler

PROBE = "#include <libaio.h>\nint main() { io_context_t context = 0; return io_setup(1, &context); }\n"
INSTALL_HINT = "install libaio's headers: apt-get install libaio-dev (Debian/Ubuntu) or dnf install libaio-devel"


@functools.cache
def _libaio_problem(compiler: str) -> str | None:
    """Compiles and links a libaio call: header and library both there, or why not."""
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "probe.cpp")
        with open(source, "w") as handle:
            handle.write(PROBE)
        try:
            result = subprocess.run([compiler, source, "-laio", "-o", os.path.join(folder, "probe")],
                                    capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError) as error:
            return f"cannot run the compiler to look for libaio: {error}"
    if result.returncode == 0:
        return None
    missing = "libaio.h" if "libaio.h" in result.stderr else "libaio.so (-laio)"
    return f"{missing} not found; {INSTALL_HINT}"


class AsyncIOBuilder(OpBuilder):
    NAME = "async_io"
    BUILD_VAR = "DS_BUILD_AIO"
    DESCRIPTION = "asynchronous O_DIRECT file I/O for NVMe offload (libaio, thread pool, bounce buffers)"

    def sources(self) -> list[str]:
        return ["async_io/aio_file.cpp", "async_io/io_workers.cpp", "async_io/aio_handle.cpp", "async_io/async_io_ops.cpp"]

    def include_paths(self) -> list[str]:
        return ["async_io"]

    def extra_ldflags(self) -> list[str]:
        return ["-laio"]

    def compatibility_problem(self) -> str | None:
        if not os.path.exists("/proc/sys/fs/aio-max-nr"):
            return "this kernel has no native AIO (/proc/sys/fs/aio-max-nr is missing); Linux with CONFIG_AIO is needed"
        return super().compatibility_problem() or _libaio_problem(cxx_compiler())

    def load(self, verbose: bool = False):
        """As DeepSpeed's: a module whose `aio_handle(...)` makes handles."""
        super().load(verbose)
        from deepspeed_ext.ops import async_io

        return async_io
