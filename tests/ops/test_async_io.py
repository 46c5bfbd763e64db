"""The async_io op: bytes survive every size, offset, flag combination and buffer kind; many
async calls finish with one wait(); handles work side by side and release the GIL; every
failure is an OSError naming the path, offset and errno; aligned transfers really go through
O_DIRECT (none of the file lands in the page cache)."""

from __future__ import annotations

import ctypes
import errno
import itertools
import mmap
import os
import shutil
import subprocess
import threading
import time

import pytest
import torch

from deepspeed_ext.ops.async_io import aio_handle
from deepspeed_ext.ops.op_builder import AsyncIOBuilder

BLOCK = 64 * 1024
SIZES = [1, 4095, 4096, 4097, BLOCK - 1, BLOCK, BLOCK + 1, 7 * BLOCK + 123]
FLAGS = list(itertools.product([False, True], [False, True], [1, 3]))  # single_submit, overlap_events, threads


def random_bytes(count: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (count,), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def handle_for(flags, queue_depth: int = 4) -> aio_handle:
    single_submit, overlap_events, threads = flags
    return aio_handle(BLOCK, queue_depth, single_submit, overlap_events, threads)


def buffer_of(handle: aio_handle, values: torch.Tensor, kind: str) -> torch.Tensor:
    """values in a page-locked aligned tensor, a plain tensor, or one a byte off alignment."""
    if kind == "locked":
        buffer = handle.new_cpu_locked_tensor(values.numel(), values)
    elif kind == "plain":
        buffer = torch.empty_like(values)
    else:
        buffer = torch.empty(values.numel() + 1, dtype=torch.uint8)[1:]
    return buffer.copy_(values)


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: f"single{int(f[0])}-overlap{int(f[1])}-threads{f[2]}")
@pytest.mark.parametrize("kind", ["locked", "plain", "misaligned"])
def test_write_then_read_round_trips(tmp_path, flags, kind):
    handle = handle_for(flags)
    for seed, size in enumerate(SIZES):
        values = random_bytes(size, seed)
        path = tmp_path / f"{size}.bin"
        assert handle.write(buffer_of(handle, values, kind), path, validate=True) == 0
        assert path.stat().st_size == size  # nothing past the end
        assert path.read_bytes() == values.numpy().tobytes()
        restored = buffer_of(handle, torch.zeros_like(values), kind)
        assert handle.read(restored, path, validate=True) == 0
        assert torch.equal(restored, values)


@pytest.mark.parametrize("offset", [0, 4096, 123, 3 * BLOCK + 1])
def test_pwrite_and_pread_at_offsets_keep_the_rest(tmp_path, offset):
    handle = aio_handle(BLOCK, 8, False, True, 2)
    path = tmp_path / "file.bin"
    base = random_bytes(offset + 2 * BLOCK + 77, 1)
    path.write_bytes(base.numpy().tobytes())
    piece = random_bytes(BLOCK + 5, 2)
    handle.sync_pwrite(piece, path, file_offset=offset)
    expected = base.clone()
    expected[offset:offset + piece.numel()] = piece
    assert path.read_bytes() == expected.numpy().tobytes()  # before and after the piece untouched
    back = torch.empty_like(piece)
    handle.sync_pread(back, path, file_offset=offset)
    assert torch.equal(back, piece)


def test_many_async_calls_then_one_wait(tmp_path):
    handle = aio_handle(BLOCK, 8, False, False, 2)
    values = [random_bytes(BLOCK * (i % 4) + i * 1000 + 1, i) for i in range(24)]
    for i, v in enumerate(values):
        assert handle.async_pwrite(v, tmp_path / f"{i}.bin") == 0
    assert handle.wait() == 24
    restored = [torch.empty_like(v) for v in values]
    for i, r in enumerate(restored):
        handle.async_pread(r, tmp_path / f"{i}.bin")
    assert handle.wait() == 24
    assert all(torch.equal(r, v) for r, v in zip(restored, values))
    assert handle.wait() == 0


def test_handles_run_side_by_side_in_threads(tmp_path):
    failures = []

    def round_trips(index: int) -> None:
        handle = aio_handle(BLOCK, 4, False, True, 2)
        for step in range(5):
            values = random_bytes(3 * BLOCK + index * 17 + step, index * 10 + step)
            path = tmp_path / f"{index}-{step}.bin"
            handle.write(values, path)
            back = torch.empty_like(values)
            handle.read(back, path)
            if not torch.equal(back, values):
                failures.append(path)

    threads = [threading.Thread(target=round_trips, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_blocking_calls_release_the_gil(tmp_path):
    handle = aio_handle(1 << 20, 8, False, True, 1)
    values = torch.randn(25_000_000)  # 100 MB
    path = tmp_path / "big.bin"
    handle.write(values, path)
    spins, stop = [0], threading.Event()

    def spin() -> None:
        while not stop.is_set():
            spins[0] += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    started = time.perf_counter()
    handle.read(torch.empty_like(values), path)
    elapsed = time.perf_counter() - started
    stop.set()
    spinner.join()
    assert spins[0] > 1000 * elapsed  # a GIL-holding read would allow a few switches at most


def test_getters_locked_tensors_and_argument_errors():
    handle = aio_handle(block_size=BLOCK, queue_depth=16, single_submit=True, overlap_events=False,
                        intra_op_parallelism=3)
    assert (handle.get_block_size(), handle.get_queue_depth(), handle.get_single_submit(),
            handle.get_overlap_events(), handle.get_intra_op_parallelism()) == (BLOCK, 16, True, False, 3)
    assert handle.get_alignment() == 4096
    locked = handle.new_cpu_locked_tensor(1000, torch.empty(0, dtype=torch.bfloat16))
    assert locked.dtype == torch.bfloat16 and locked.numel() == 1000 and locked.data_ptr() % 4096 == 0
    assert handle.free_cpu_locked_tensor(locked) and not handle.free_cpu_locked_tensor(torch.empty(3))
    for keyword, value in [("block_size", 0), ("queue_depth", -1), ("intra_op_parallelism", 0)]:
        with pytest.raises(RuntimeError, match=keyword):
            aio_handle(**{keyword: value})
    for call, message in [
        (lambda: handle.sync_pwrite(torch.zeros(10, 10).t(), "/tmp/never"), "buffer must be contiguous"),
        (lambda: handle.sync_pwrite(torch.zeros(10, device="meta"), "/tmp/never"),
         "buffer must be a dense CPU tensor .* on meta"),
        (lambda: handle.sync_pwrite(torch.zeros(10).to_sparse(), "/tmp/never"), "sparse_coo tensor"),
        (lambda: handle.sync_pwrite(torch.zeros(10), "/tmp/never\0/x"), "contains a NUL byte"),
        (lambda: handle.async_pread(torch.zeros(10), b"/tmp/never\0"), "contains a NUL byte"),
        (lambda: handle.sync_pwrite(torch.zeros(10), ""), "filename is empty"),
        (lambda: handle.sync_pwrite(torch.zeros(10), "/tmp/never", file_offset=-4096), "file_offset must be a"),
        (lambda: handle.sync_pread(torch.zeros(10), "/tmp/never", file_offset=1.5), "file_offset must be a"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()
    assert not os.path.exists("/tmp/never")  # nothing was written, at the truncated path or any other
    with pytest.raises(TypeError, match="buffer must be a tensor"):
        handle.sync_pwrite([1, 2], "/tmp/never")


def expect_os_error(code: int, *fragments: str):
    return pytest.raises(OSError, match=".*".join(fragments + (rf"\(errno {code}\)",)))


def test_missing_short_and_directory_files(tmp_path):
    handle = aio_handle(BLOCK, 4)
    missing = tmp_path / "missing.bin"
    with expect_os_error(errno.ENOENT, str(missing), "offset 0"):
        handle.read(torch.empty(10, dtype=torch.uint8), missing)
    short = tmp_path / "short.bin"
    short.write_bytes(b"x" * 1000)
    with expect_os_error(errno.ENODATA, str(short), "offset 200", "only 1000 bytes"):
        handle.sync_pread(torch.empty(900, dtype=torch.uint8), short, file_offset=200)
    with expect_os_error(errno.EISDIR, str(tmp_path)):
        handle.write(torch.zeros(10), tmp_path)


def test_async_failures_surface_at_wait_after_the_rest_finished(tmp_path):
    handle = aio_handle(BLOCK, 4)
    values = random_bytes(BLOCK * 3, 5)
    handle.async_pwrite(values, "/dev/full")
    handle.async_pwrite(values, tmp_path / "fine.bin")
    with expect_os_error(errno.ENOSPC, "/dev/full", "offset 0"):
        handle.wait()
    assert (tmp_path / "fine.bin").read_bytes() == values.numpy().tobytes()
    assert handle.wait() == 0


def test_permission_denied(tmp_path):
    handle = aio_handle(BLOCK, 4)
    path = tmp_path / "locked.bin"
    path.write_bytes(b"x" * 100)
    if os.geteuid() != 0:
        path.chmod(0o400)
        code = errno.EACCES
    elif shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], check=False).returncode == 0:
        code = errno.EPERM  # root ignores modes; an immutable file still refuses writes
    else:
        pytest.skip("running as root without chattr: no way to make a file unwritable")
    try:
        with expect_os_error(code, "cannot open for writing", str(path)):
            handle.write(torch.zeros(10), path)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=False)
    assert path.read_bytes() == b"x" * 100


def test_io_error_mid_transfer_names_the_failing_offset():
    """/proc/self/mem fails with EIO where this process's memory stops being mapped: a read
    that starts two pages before the end of a mapping fails part way, at that end."""
    with open("/proc/self/maps") as maps:
        mappings = [(*(int(x, 16) for x in line.split()[0].split("-")), line.split()[1]) for line in maps]
    ends = [stop for (_, stop, permissions), (following, _, _) in zip(mappings, mappings[1:])
            if permissions.startswith("r") and following > stop + 4 * 4096]
    if not ends:
        pytest.skip("no readable mapping followed by an unmapped gap")
    end = ends[0]
    handle = aio_handle(4096, 4)
    buffer = torch.empty(4 * 4096, dtype=torch.uint8)
    with expect_os_error(errno.EIO, "/proc/self/mem", f"offset {end}"):
        handle.sync_pread(buffer, "/proc/self/mem", file_offset=end - 2 * 4096)


def test_incompatibility_explains_what_to_install(tmp_path, monkeypatch):
    compiler = tmp_path / "fake-c++"
    compiler.write_text("#!/bin/sh\necho 'probe.cpp:1:10: fatal error: libaio.h: No such file or directory' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    builder = AsyncIOBuilder()
    assert not builder.is_compatible()
    assert "libaio.h not found" in builder.incompatible_reason and "apt-get install libaio-dev" in builder.incompatible_reason


def page_cache_fraction(path) -> float:
    """The share of the file's pages in the page cache (mincore on a mapping never touched)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype, libc.mmap.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                                              ctypes.c_int, ctypes.c_int, ctypes.c_long]
    size, page = os.path.getsize(path), os.sysconf("SC_PAGE_SIZE")
    pages = (size + page - 1) // page
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert address not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        residency = (ctypes.c_ubyte * pages)()
        assert libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), residency) == 0
        libc.munmap(ctypes.c_void_p(address), ctypes.c_size_t(size))
    finally:
        os.close(fd)
    return sum(v & 1 for v in residency) / pages


def drop_from_page_cache(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture
def direct_folder(tmp_path):
    """tmp_path where its filesystem takes O_DIRECT and page-cache residency can be observed."""
    probe = tmp_path / "probe"
    try:
        os.close(os.open(probe, os.O_RDWR | os.O_CREAT | os.O_DIRECT))
    except OSError as error:
        pytest.skip(f"{tmp_path}'s filesystem does not take O_DIRECT: {error}")
    probe.write_bytes(b"x" * 65536)
    if page_cache_fraction(probe) < 1:  # a buffered write must leave its pages cached
        pytest.skip("this filesystem does not keep written pages in the page cache")
    drop_from_page_cache(probe)
    if page_cache_fraction(probe) > 0:
        pytest.skip("posix_fadvise(DONTNEED) does not drop pages on this filesystem")
    return tmp_path


@pytest.mark.parametrize("kind", ["locked", "plain", "misaligned"])
def test_aligned_transfers_bypass_the_page_cache(direct_folder, kind):
    """O_DIRECT is used where the filesystem has it: aligned writes and reads leave none of the
    file in the page cache, where a buffered fallback would leave all of it."""
    handle = handle_for((False, False, 2))
    values = random_bytes(4 * BLOCK, 0)
    path = direct_folder / "direct.bin"
    assert handle.write(buffer_of(handle, values, kind), path, validate=False) == 0
    assert page_cache_fraction(path) == 0
    path.write_bytes(values.numpy().tobytes())  # buffered: cached ...
    assert page_cache_fraction(path) == 1
    drop_from_page_cache(path)  # ... until dropped
    restored = buffer_of(handle, torch.zeros_like(values), kind)
    assert handle.read(restored, path, validate=False) == 0
    assert torch.equal(restored, values)
    assert page_cache_fraction(path) == 0
