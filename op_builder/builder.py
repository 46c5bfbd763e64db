"""OpBuilder: how one op is described, probed, compiled and loaded.

A subclass names its sources and flags; this base class does the rest:

* ``is_compatible()`` probes without side effects and never raises;
* ``load()`` uses the library prebuilt at install time (``DS_BUILD_OPS=1``) when one
  was built from exactly these sources, flags and torch, and otherwise ``jit_load()``s;
* ``jit_load()`` builds with ninja into a directory named by ``cache_key()``, so an
  edited source, a new flag or another torch never reuses a stale library;
* ``builder()`` gives the setuptools extension that ``setup.py`` prebuilds.

Ops register themselves with ``TORCH_LIBRARY_FRAGMENT(deepspeed_ext, ...)``, so a
loaded op is reached as ``torch.ops.deepspeed_ext.<name>``.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import pkgutil
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

# The op sources: csrc/ beside this package in a checkout, deepspeed_ext/ops/csrc/ in an
# install (setup.py maps both op_builder/ and csrc/ under deepspeed_ext/ops/).
CSRC = Path(__file__).resolve().parent.parent / "csrc"
PREBUILT_PACKAGE = "deepspeed_ext.ops.prebuilt"
BUILD_LOG_LINES = 40
COMMON_CXX_ARGS = [
    "-O3",
    "-fopenmp",
    # Exact float semantics: no fused multiply-add contraction, so every SIMD level and
    # the CUDA kernels (built with --fmad=false) round identically. -fno-math-errno
    # changes no result; it only lets sqrt compile to one instruction.
    "-ffp-contract=off",
    "-fno-math-errno",
    # Ops register through static initialisers and export nothing; hidden symbols keep two
    # op libraries that compile the same kernels from binding to each other's copies.
    "-fvisibility=hidden",
]


class OpBuildError(RuntimeError):
    """An op could not be built or loaded; the message carries the compiler's last lines."""


@dataclass(frozen=True)
class LoadedOp:
    """How an op got into this process, for ds_report and the tests."""

    source: str  # "prebuilt", "jit-cache" or "jit-build"
    path: str
    seconds: float


_loaded: dict[str, LoadedOp] = {}


@functools.cache
def compiler_identity(compiler: str) -> str:
    """First line of `<compiler> --version`, part of the cache key ("" if it will not run)."""
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else ""


def cxx_compiler() -> str:
    return os.environ.get("CXX", "c++")


def cuda_home() -> str | None:
    """The CUDA toolkit to build with: $CUDA_HOME / $CUDA_PATH, else the first of nvcc's
    parent folder and /usr/local/cuda that holds cuda_runtime.h. (torch stops at nvcc's
    parent, which is wrong when nvcc on PATH is a wrapper script in /usr/local/bin.)"""
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(variable):
            return os.environ[variable]
    nvcc = shutil.which("nvcc")
    candidates = ([str(Path(nvcc).resolve().parent.parent)] if nvcc else []) + ["/usr/local/cuda"]
    return next((c for c in candidates if (Path(c) / "include" / "cuda_runtime.h").exists()), None)


def build_cache_root() -> Path:
    """Where JIT builds live: $TORCH_EXTENSIONS_DIR (PyTorch's own variable) or ~/.cache."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(root) / "deepspeed_ext"


@contextlib.contextmanager
def _exclusive_lock(path: Path):
    """An flock the kernel releases when its holder dies, so a killed build never leaves
    a lock that makes the next build wait forever."""
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class OpBuilder(abc.ABC):
    """Base of every op builder. Subclasses set NAME, BUILD_VAR and DESCRIPTION and
    override sources() and, where needed, the flag methods and compatibility_problem()."""

    NAME = ""
    BUILD_VAR = ""  # DS_BUILD_<NAME>: setup.py's per-op switch
    DESCRIPTION = ""
    incompatible_reason: str | None = None

    # ---- what the op is made of -------------------------------------------------
    @abc.abstractmethod
    def sources(self) -> list[str]:
        """C++ sources, relative to csrc/."""

    def cuda_sources(self) -> list[str]:
        """CUDA sources, relative to csrc/; compiled only where torch has CUDA and nvcc exists."""
        return []

    def include_paths(self) -> list[str]:
        """Include directories, relative to csrc/."""
        return ["include"]

    def cxx_args(self) -> list[str]:
        return list(COMMON_CXX_ARGS)

    def nvcc_args(self) -> list[str]:
        return ["-O3", "--fmad=false", "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"]

    def extra_ldflags(self) -> list[str]:
        return ["-fopenmp"]

    # ---- compatibility ----------------------------------------------------------
    def compatibility_problem(self) -> str | None:
        """Why this op cannot be built here, or None. Must be cheap and side-effect free."""
        if shutil.which(cxx_compiler()) is None:
            return f"no C++ compiler found (looked for '{cxx_compiler()}'; install g++ or set CXX)"
        return None

    def is_compatible(self, verbose: bool = False) -> bool:
        """Whether the op can be built here. Never raises; the reason is in incompatible_reason."""
        try:
            problem = self.compatibility_problem()
        except Exception as error:  # noqa: BLE001 - a probe must never take the caller down
            problem = f"compatibility probe failed: {error}"
        self.incompatible_reason = problem
        if problem and verbose:
            print(f"[deepspeed_ext] op {self.NAME} is not compatible: {problem}")
        return problem is None

    def with_cuda(self) -> bool:
        return bool(self.cuda_sources()) and torch.version.cuda is not None and cuda_home() is not None

    def _point_torch_at_cuda(self) -> None:
        if self.with_cuda():
            from torch.utils import cpp_extension

            cpp_extension.CUDA_HOME = cuda_home()

    # ---- identity of the binary -------------------------------------------------
    def _absolute(self, relative: list[str]) -> list[str]:
        return [str(CSRC / path) for path in relative]

    def all_sources(self) -> list[str]:
        return self._absolute(self.sources() + (self.cuda_sources() if self.with_cuda() else []))

    def _hashed_files(self) -> list[Path]:
        folders = {Path(path).parent for path in self.all_sources()} | {CSRC / d for d in self.include_paths()}
        return sorted(f for folder in folders for f in folder.iterdir() if f.is_file())

    def cache_key(self) -> str:
        """A digest of everything that changes the binary: source and header contents,
        flags, torch version and C++ ABI, CUDA version, compilers. (No SIMD level: every
        level is compiled in and chosen at run time.)"""
        digest = hashlib.sha256()
        for path in self._hashed_files():
            # Named relative to csrc/ so a checkout and an install of the same sources agree.
            name = path.relative_to(CSRC) if path.is_relative_to(CSRC) else path
            digest.update(name.as_posix().encode())
            digest.update(path.read_bytes())
        cuda = self.with_cuda()
        digest.update(json.dumps([
            self.NAME, self.cxx_args(), self.extra_ldflags(), self.include_paths(),
            self.nvcc_args() if cuda else None, compiler_identity(str(Path(cuda_home()) / "bin" / "nvcc")) if cuda else None,
            torch.__version__, torch.version.git_version, torch._C._GLIBCXX_USE_CXX11_ABI,
            torch.version.cuda, compiler_identity(cxx_compiler()),
        ]).encode())
        return digest.hexdigest()[:16]

    def library_name(self) -> str:
        return f"{self.NAME}_{self.cache_key()}"

    def build_directory(self) -> Path:
        return build_cache_root() / self.library_name()

    # ---- prebuilt ---------------------------------------------------------------
    def prebuilt_module(self) -> str:
        """Module name of the install-time build of these exact sources and flags."""
        return f"{PREBUILT_PACKAGE}.{self.library_name()}"

    def prebuilt_path(self) -> str | None:
        try:
            spec = importlib.util.find_spec(self.prebuilt_module())
        except ModuleNotFoundError:
            return None
        return spec.origin if spec is not None else None

    def installed_status(self) -> str:
        """'yes' (a usable prebuilt library), 'stale' (one built from other sources, flags
        or torch) or 'no'."""
        if self.prebuilt_path():
            return "yes"
        try:
            package = importlib.import_module(PREBUILT_PACKAGE)
        except ImportError:
            return "no"
        names = (m.name for m in pkgutil.iter_modules(package.__path__))
        return "stale" if any(n.startswith(f"{self.NAME}_") for n in names) else "no"

    def builder(self):
        """The setuptools extension setup.py compiles when DS_BUILD_OPS=1."""
        from torch.utils.cpp_extension import CppExtension, CUDAExtension

        self._point_torch_at_cuda()
        relative = [os.path.relpath(p) for p in self.all_sources()]
        includes = self._absolute(self.include_paths())
        if self.with_cuda():
            return CUDAExtension(self.prebuilt_module(), relative, include_dirs=includes,
                                 extra_compile_args={"cxx": self.cxx_args(), "nvcc": self.nvcc_args()},
                                 extra_link_args=self.extra_ldflags())
        return CppExtension(self.prebuilt_module(), relative, include_dirs=includes,
                            extra_compile_args={"cxx": self.cxx_args()}, extra_link_args=self.extra_ldflags())

    # ---- loading ----------------------------------------------------------------
    def loaded(self) -> LoadedOp | None:
        return _loaded.get(self.NAME)

    def load(self, verbose: bool = False):
        """Make the op's torch.ops available: prebuilt if it matches, else JIT. Returns
        the torch.ops.deepspeed_ext namespace."""
        if self.NAME not in _loaded:
            started = time.perf_counter()
            prebuilt = self.prebuilt_path()
            if prebuilt:
                torch.ops.load_library(prebuilt)
                _loaded[self.NAME] = LoadedOp("prebuilt", prebuilt, time.perf_counter() - started)
            else:
                self.jit_load(verbose)
        return torch.ops.deepspeed_ext

    def jit_load(self, verbose: bool = False):
        """Build (or reuse the cached build of) this op with ninja and load it."""
        if not self.is_compatible():
            raise OpBuildError(f"op {self.NAME} cannot be built here: {self.incompatible_reason}")
        started = time.perf_counter()
        directory = self.build_directory()
        library = directory / f"{self.library_name()}.so"
        complete = directory / "build.ok"
        source = "jit-cache"
        if not (complete.exists() and library.exists()):
            directory.mkdir(parents=True, exist_ok=True)
            with _exclusive_lock(directory.with_suffix(".lock")):
                if not (complete.exists() and library.exists()):
                    self._build(directory, verbose)
                    complete.write_text(str(library))
                    source = "jit-build"
        torch.ops.load_library(str(library))
        _loaded[self.NAME] = LoadedOp(source, str(library), time.perf_counter() - started)
        return torch.ops.deepspeed_ext

    def _build(self, directory: Path, verbose: bool) -> None:
        from torch.utils import cpp_extension

        # We hold the flock, so a torch baton file here was left by a killed build.
        stale = directory / "lock"
        if stale.exists():
            warnings.warn(f"removing the lock of an interrupted build of op {self.NAME}: {stale}", stacklevel=3)
            stale.unlink()
        if shutil.which("ninja") is None and importlib.util.find_spec("ninja") is None:
            raise OpBuildError(f"building op {self.NAME} needs ninja: pip install ninja")
        self._point_torch_at_cuda()
        try:
            cpp_extension.load(
                name=self.library_name(), sources=self.all_sources(), extra_cflags=self.cxx_args(),
                extra_cuda_cflags=self.nvcc_args(), extra_ldflags=self.extra_ldflags(),
                extra_include_paths=self._absolute(self.include_paths()), build_directory=str(directory),
                verbose=verbose, with_cuda=self.with_cuda(), is_python_module=False,
            )
        except (RuntimeError, OSError) as error:  # torch reports a failed ninja build as RuntimeError
            log = directory / "build.log"
            log.write_text(str(error))
            tail = "\n".join(str(error).splitlines()[-BUILD_LOG_LINES:])
            raise OpBuildError(
                f"building op {self.NAME} failed in {directory} (full log: {log}); "
                f"last compiler lines:\n{tail}"
            ) from None
