"""ds_report: which ops are prebuilt and which can be built here, and the environment
they build against. Same sections and rows as DeepSpeed's report, plus --json and --build."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

import torch

import deepspeed_ext
from deepspeed_ext.ops.op_builder import ALL_OPS, OpBuildError, cpu_simd_level
from deepspeed_ext.ops.op_builder.builder import build_cache_root
from deepspeed_ext.ops.op_builder.simd import supported_simd_level
from deepspeed_ext.version import COMPAT_LABEL

RULE = "-" * 50
OP_COLUMN = 23
ENV_COLUMN = 33


def _color(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if sys.stdout.isatty() else text


OKAY, YES, NO = _color("[OKAY]", "92"), _color("[YES]", "92"), _color("[NO]", "93")
FAIL, STALE = _color("[FAIL]", "91"), _color("[STALE]", "93")


def nvcc_version() -> str | None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+\.\d+)", out)
    return match.group(1) if match else None


def shm_size_gb() -> float | None:
    try:
        stats = os.statvfs("/dev/shm")
    except OSError:
        return None
    return stats.f_frsize * stats.f_blocks / 1024**3


def deepspeed_module() -> str:
    """Which `deepspeed` an `import deepspeed` finds (without importing it): deepspeed_ext's
    compat package, another distribution (Microsoft's DeepSpeed), or none."""
    spec = importlib.util.find_spec("deepspeed")
    if spec is None:
        return "not installed (pip install --no-build-isolation ./compat/deepspeed for Transformers / Accelerate)"
    try:
        version = importlib.metadata.version("deepspeed")
    except importlib.metadata.PackageNotFoundError:
        return f"a 'deepspeed' folder with no installed distribution at {spec.origin}"
    if COMPAT_LABEL in version:
        return f"{version}: deepspeed_ext's compat package"
    return f"{version} at {spec.origin}: not deepspeed_ext (Microsoft's DeepSpeed?)"


def collect() -> dict[str, Any]:
    """Everything the report prints, as plain data (what --json emits)."""
    ops = {}
    for name, builder_class in ALL_OPS.items():
        builder = builder_class()
        compatible = builder.is_compatible()
        loaded = builder.loaded()
        installed = builder.installed_status()  # hashes the op's sources: once per op
        ops[name] = {
            "description": builder.DESCRIPTION,
            "installed": installed == "yes",
            "installed_status": installed,
            "compatible": compatible,
            "reason": builder.incompatible_reason,
            "cuda": builder.with_cuda(),
            "loaded_from": loaded.source if loaded else None,
        }
    try:
        simd = cpu_simd_level()
    except ValueError as error:
        simd = f"invalid ({error})"
    return {
        "ninja": shutil.which("ninja") is not None,
        "ops": ops,
        "environment": {
            "torch install path": os.path.dirname(torch.__file__),
            "torch version": torch.__version__,
            "deepspeed_ext install path": os.path.dirname(deepspeed_ext.__file__),
            "deepspeed_ext info": deepspeed_ext.__version__,
            "import deepspeed": deepspeed_module(),
            "torch cuda version": torch.version.cuda,
            "torch hip version": getattr(torch.version, "hip", None),
            "nvcc version": nvcc_version(),
            "deepspeed_ext wheel compiled w.": _prebuilt_summary(ops),
            "shared memory (/dev/shm) size": shm_size_gb(),
            "ops with CUDA kernels": ", ".join(n for n, op in ops.items() if op["cuda"]) or (
                "none (torch has no CUDA)" if torch.version.cuda is None else "none (no CUDA toolkit found)"),
            "cpu simd level": simd,
            "cpu simd supported": supported_simd_level(),
            "DS_SIMD": os.environ.get("DS_SIMD"),
            "jit build cache": str(build_cache_root()),
        },
    }


def _prebuilt_summary(ops: dict[str, dict]) -> str:
    prebuilt = [name for name, op in ops.items() if op["installed"]]
    if not prebuilt:
        return "no prebuilt ops (all JIT)"
    return f"torch {torch.__version__}, cuda {torch.version.cuda}: {', '.join(prebuilt)}"


def _dotted(label: str, value: str, width: int) -> str:
    return f"{label} {'.' * max(width - len(label), 3)} {value}"


def print_report(report: dict[str, Any], hide_operator_status: bool, hide_errors_and_warnings: bool) -> None:
    print(RULE)
    print("deepspeed_ext C++/CUDA extension op report")
    print(RULE)
    print("NOTE: Ops not installed will be just-in-time (JIT) compiled at\n"
          "      runtime if needed. Op compatibility means that your system\n"
          "      meet the required dependencies to JIT install the op.")
    print(RULE)
    print("JIT compiled ops requires ninja")
    print(_dotted("ninja", OKAY if report["ninja"] else FAIL, OP_COLUMN))
    if not hide_operator_status:
        print(RULE)
        print(_dotted("op name", "installed .. compatible", OP_COLUMN))
        print(RULE)
        for name, op in report["ops"].items():
            installed = {"yes": YES, "stale": STALE}.get(op["installed_status"], NO)
            print(_dotted(name, f"{installed} {'.' * 7} {OKAY if op['compatible'] else NO}", OP_COLUMN))
            if not hide_errors_and_warnings and op["reason"]:
                print(f" [WARNING]  {name}: {op['reason']}")
            if not hide_errors_and_warnings and op["installed_status"] == "stale":
                print(f" [WARNING]  {name}: the prebuilt library was built from other sources, flags or torch; "
                      "it will be JIT-built instead (reinstall with DS_BUILD_OPS=1 to refresh it)")
    print(RULE)
    print("deepspeed_ext general environment info:")
    for label, value in report["environment"].items():
        if label == "shared memory (/dev/shm) size" and value is not None:
            value = f"{value:.2f} GB"
        print(_dotted(label, str([value]) if "path" in label else str(value), ENV_COLUMN))


def build_all(as_json: bool, require_cuda: bool = False) -> int:
    """JIT-build every compatible op now; print each build's time and whether it came from
    cache. With require_cuda, an op with CUDA sources that would build without them fails."""
    results, failed = {}, False
    for name, builder_class in ALL_OPS.items():
        builder = builder_class()
        if require_cuda and builder.cuda_sources() and not builder.with_cuda():
            results[name], failed = {"status": "failed", "error": (
                f"--cuda needs a CUDA build of torch and nvcc (torch.version.cuda={torch.version.cuda}, "
                f"nvcc={shutil.which('nvcc')})")}, True
            continue
        if not builder.is_compatible():
            results[name] = {"status": "skipped", "reason": builder.incompatible_reason}
            continue
        try:
            builder.jit_load()
        except OpBuildError as error:
            results[name], failed = {"status": "failed", "error": str(error)}, True
            continue
        loaded = builder.loaded()
        results[name] = {"status": loaded.source, "seconds": round(loaded.seconds, 3), "path": loaded.path,
                         "cuda": builder.with_cuda()}
    if as_json:
        print(json.dumps({"build": results}, indent=2))
    else:
        print(RULE)
        for name, result in results.items():
            detail = {"jit-build": "built in {seconds} s", "jit-cache": "from cache in {seconds} s"}.get(
                result["status"], result.get("reason") or result.get("error") or "")
            print(_dotted(name, f"[{result['status']}] {detail.format(**result)}", OP_COLUMN))
    return 1 if failed else 0


def cli_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ds_report", description=__doc__)
    parser.add_argument("--hide_operator_status", action="store_true", help="omit the op table")
    parser.add_argument("--hide_errors_and_warnings", action="store_true", help="omit reasons and warnings")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--build", action="store_true", help="JIT-build every compatible op now and time it")
    parser.add_argument("--cuda", action="store_true",
                        help="with --build: fail unless every op with CUDA sources builds them (nvcc + CUDA torch)")
    args = parser.parse_args(argv)
    if args.build:
        sys.exit(build_all(args.json, require_cuda=args.cuda))
    report = collect()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, args.hide_operator_status, args.hide_errors_and_warnings)


if __name__ == "__main__":
    cli_main()
