"""Every op's CUDA sources compile with nvcc (sm_80, sm_90) against a CUDA build of torch and
link into a loadable library, on a machine without a GPU. Runs where DS_TEST_CUDA_BUILD=1
(scripts/test.sh sets it when nvcc exists); the CUDA torch lives in a cached venv made by
scripts/cuda_torch_venv.sh."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deepspeed_ext.ops.op_builder import ALL_OPS

ROOT = Path(__file__).resolve().parents[2]
CUDA_KERNELS = {"fused_adam": ["fused_adam_step"], "zero_gather": ["flatten_into", "unflatten_from"],
                "quantizer": ["quantize_into", "dequantize_into"],
                "moe": ["moe_dispatch", "moe_combine", "moe_route_dots"],
                "sparse_attention": ["sparse_sdd", "sparse_dsd", "sparse_softmax", "sparse_softmax_backward"]}
# op -> the ops it must register for CUDA

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("DS_TEST_CUDA_BUILD") != "1" or shutil.which("nvcc") is None,
                       reason="set DS_TEST_CUDA_BUILD=1 with nvcc installed (scripts/test.sh does) to build CUDA ops"),
]


VENV_GB = 8  # torch 2.14.1+cu130 with its CUDA libraries installs to about 5.5 GB


def cuda_venv_path() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get("DS_CUDA_VENV") or Path(cache) / "deepspeed_ext" / "cuda-torch-venv")


@pytest.fixture(scope="module")
def cuda_python():
    venv = cuda_venv_path()
    if not venv.exists():
        existing = next(p for p in [venv, *venv.parents] if p.exists())
        free_gb = shutil.disk_usage(existing).free / 2**30
        if free_gb < VENV_GB:
            pytest.skip(f"only {free_gb:.1f} GB free for the CUDA torch venv at {venv} (needs {VENV_GB} GB)")
    made = subprocess.run(["bash", str(ROOT / "scripts/cuda_torch_venv.sh")], capture_output=True, text=True,
                          check=False)
    assert made.returncode == 0, made.stderr[-3000:]
    return made.stdout.strip().splitlines()[-1]


def test_every_op_with_cuda_sources_builds_and_links(cuda_python):
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(ROOT / ".cache/torch_extensions_cuda")}
    env.pop("DS_SIMD", None)
    built = subprocess.run([cuda_python, "-m", "deepspeed_ext.env_report", "--build", "--cuda", "--json"], env=env,
                           capture_output=True, text=True, check=False, cwd=ROOT)
    assert built.returncode == 0, built.stdout[-5000:] + built.stderr[-3000:]
    results = json.loads(built.stdout)["build"]
    for name, builder_class in ALL_OPS.items():
        if builder_class().cuda_sources():
            assert results[name]["status"] in ("jit-build", "jit-cache"), results[name]
            assert results[name]["cuda"] is True
    assert set(CUDA_KERNELS) <= {name for name, b in ALL_OPS.items() if b().cuda_sources()}
    probe = "; ".join([
        "import torch",
        "from deepspeed_ext.ops.op_builder import ALL_OPS",
        *(f"ALL_OPS[{op!r}]().load()" for op in CUDA_KERNELS),
        ("print([torch._C._dispatch_has_kernel_for_dispatch_key(f'deepspeed_ext::{name}', 'CUDA') "
        f"for names in {list(CUDA_KERNELS.values())!r} for name in names])"),
    ])
    registered = subprocess.run([cuda_python, "-c", probe], env=env, capture_output=True, text=True, check=False,
                                cwd=ROOT)
    assert registered.returncode == 0, registered.stderr[-3000:]
    assert "False" not in registered.stdout and "True" in registered.stdout
