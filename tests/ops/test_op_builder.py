"""OpBuilder: cache keys, JIT builds and their failures, stale locks, compatibility probes."""

import ctypes
import os
import signal
import time
import warnings
from pathlib import Path

import pytest

from deepspeed_ext.ops.op_builder import CPUAdamBuilder, OpBuilder, OpBuildError
from tests.ranks import run_ranks, spawn

EXPORT = 'extern "C" __attribute__((visibility("default")))'  # ops build with -fvisibility=hidden
TINY_SOURCE = EXPORT + ' int tiny_answer() { return 42; }\n'


class TinyBuilder(OpBuilder):
    """A torch-free one-function op, so each test build takes about a second."""

    NAME = "tiny_test_op"
    BUILD_VAR = "DS_BUILD_TINY_TEST_OP"

    def __init__(self, folder, extra_flags=()):
        self.folder = folder
        self.extra_flags = list(extra_flags)

    def sources(self):
        return [str(self.folder / "tiny.cpp")]  # absolute paths override csrc/

    def include_paths(self):
        return [str(self.folder)]

    def cxx_args(self):
        return super().cxx_args() + self.extra_flags


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "tiny.cpp").write_text(TINY_SOURCE)
    return TinyBuilder(folder)


def test_cache_key_follows_sources_headers_and_flags(tiny):
    key = tiny.cache_key()
    assert key == TinyBuilder(tiny.folder).cache_key()
    (tiny.folder / "tiny.cpp").write_text(TINY_SOURCE + "// edited\n")
    assert tiny.cache_key() != key
    edited = tiny.cache_key()
    (tiny.folder / "helper.h").write_text("#pragma once\n")
    assert tiny.cache_key() != edited
    assert TinyBuilder(tiny.folder, ["-DEXTRA"]).cache_key() != tiny.cache_key()
    assert tiny.build_directory().name == f"tiny_test_op_{tiny.cache_key()}"


def test_jit_build_then_cache(tiny):
    tiny.jit_load()
    built = tiny.loaded()
    assert built.source == "jit-build"
    assert ctypes.CDLL(built.path).tiny_answer() == 42
    tiny.jit_load()
    assert tiny.loaded().source == "jit-cache"
    assert tiny.loaded().path == built.path
    os.remove(built.path)  # a cache that lost its library is rebuilt, not trusted
    tiny.jit_load()
    assert tiny.loaded().source == "jit-build"


def test_edited_source_is_rebuilt_not_reused(tiny):
    tiny.jit_load()
    first = tiny.loaded().path
    (tiny.folder / "tiny.cpp").write_text(EXPORT + ' int tiny_answer() { return 43; }\n')
    tiny.jit_load()
    assert tiny.loaded().source == "jit-build"
    assert tiny.loaded().path != first
    assert ctypes.CDLL(tiny.loaded().path).tiny_answer() == 43


def test_broken_source_raises_with_compiler_output(tiny):
    (tiny.folder / "tiny.cpp").write_text("int broken( { return ; }\n")
    with pytest.raises(OpBuildError) as raised:
        tiny.jit_load()
    message = str(raised.value)
    assert "building op tiny_test_op failed" in message
    assert "tiny.cpp" in message and "error" in message  # the compiler's own words
    assert str(tiny.build_directory()) in message
    assert (tiny.build_directory() / "build.log").exists()
    assert not (tiny.build_directory() / "build.ok").exists()


def test_lock_left_by_killed_build_is_cleared(tiny):
    tiny.build_directory().mkdir(parents=True)
    (tiny.build_directory() / "lock").write_text("")  # what torch leaves when its builder is killed
    with pytest.warns(UserWarning, match="interrupted build"):
        tiny.jit_load()
    assert tiny.loaded().source == "jit-build"


def test_compatibility_probe_never_raises(tiny, monkeypatch):
    class ExplodingProbe(TinyBuilder):
        def compatibility_problem(self):
            raise OSError("probe blew up")

    exploding = ExplodingProbe(tiny.folder)
    assert exploding.is_compatible() is False
    assert "probe blew up" in exploding.incompatible_reason
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    assert tiny.is_compatible() is False
    assert "no C++ compiler" in tiny.incompatible_reason
    with pytest.raises(OpBuildError, match="cannot be built here: no C\\+\\+ compiler"):
        tiny.jit_load()


def test_cpu_adam_builder_describes_itself():
    builder = CPUAdamBuilder()
    assert builder.BUILD_VAR == "DS_BUILD_CPU_ADAM"
    assert builder.is_compatible() and builder.incompatible_reason is None
    assert all(os.path.exists(path) for path in builder.all_sources())
    extension = builder.builder()
    assert extension.name == builder.prebuilt_module()
    assert "-ffp-contract=off" in extension.extra_compile_args["cxx"]
    assert not any(flag.startswith("-march") for flag in builder.cxx_args())  # run-time dispatch instead


# A source whose compilation takes a few seconds, so a build can be caught halfway.
SLOW_SOURCE = """
constexpr long spin(long n) { long s = 0; for (long i = 0; i < n; ++i) s += i % 7; return s; }
extern "C" long tiny_answer() { constexpr long v = spin(1500000); return v > 0 ? 42 : 0; }
"""
SLOW_FLAGS = ["-fconstexpr-ops-limit=1000000000", "-fconstexpr-loop-limit=1000000000"]


def build_slow_tiny(folder: str) -> tuple[str, list[str]]:
    """JIT-loads the slow tiny op (in a process of its own); how it was loaded and the warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        builder = TinyBuilder(Path(folder), SLOW_FLAGS)
        builder.jit_load()
    return builder.loaded().source, [str(w.message) for w in caught]


@pytest.mark.slow
def test_concurrent_builds_of_one_op_build_once(tiny):
    (tiny.folder / "tiny.cpp").write_text(SLOW_SOURCE)
    builds = run_ranks(build_slow_tiny, 2, str(tiny.folder))
    assert sorted(source for source, _ in builds) == ["jit-build", "jit-cache"]


@pytest.mark.slow
def test_build_killed_halfway_does_not_block_the_next(tiny, tmp_path):
    (tiny.folder / "tiny.cpp").write_text(SLOW_SOURCE)
    slow = TinyBuilder(tiny.folder, SLOW_FLAGS)
    victim = spawn(build_slow_tiny, tmp_path, str(tiny.folder), start_new_session=True)
    deadline = time.monotonic() + 60
    while not (slow.build_directory() / "lock").exists():
        assert time.monotonic() < deadline, "the child build never started"
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    ((source, warned),) = run_ranks(build_slow_tiny, 1, str(tiny.folder))
    assert source == "jit-build"
    assert any("removing the lock of an interrupted build" in message for message in warned)


def test_prebuilt_library_from_other_sources_is_reported_stale(tmp_path, monkeypatch, capsys):
    import importlib.machinery

    from deepspeed_ext.env_report import cli_main
    from deepspeed_ext.ops.op_builder import builder as builder_module

    package = tmp_path / "fake_prebuilt"
    package.mkdir()
    (package / "__init__.py").write_text("")
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (package / f"cpu_adam_0123456789abcdef{suffix}").write_bytes(b"")  # a build from other sources
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(builder_module, "PREBUILT_PACKAGE", "fake_prebuilt")
    builder = CPUAdamBuilder()
    assert builder.prebuilt_path() is None
    assert builder.installed_status() == "stale"
    cli_main([])
    out = capsys.readouterr().out
    assert "cpu_adam ............... [STALE]" in out
    assert "it will be JIT-built instead" in out
