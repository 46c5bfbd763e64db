"""DS_BUILD_OPS / DS_BUILD_<OP> installs: a prebuilt op loads without JIT; an incompatible
op is skipped, or fails the install when forced."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import json, deepspeed_ext
from deepspeed_ext.ops.op_builder import CPUAdamBuilder
from deepspeed_ext.ops.cpu_adam import DeepSpeedCPUAdam
import torch
builder = CPUAdamBuilder()
status = builder.installed_status()
param = torch.nn.Parameter(torch.ones(3)); param.grad = torch.ones(3)
DeepSpeedCPUAdam([param], lr=0.1).step()
print(json.dumps({"file": deepspeed_ext.__file__, "installed": status, "source": builder.loaded().source,
                  "param": param.tolist()}))
"""


def pip_install_target(target, **env_overrides):
    env = {**os.environ, **env_overrides}
    for name in ("DS_BUILD_OPS", "DS_BUILD_CPU_ADAM"):
        if name not in env_overrides:
            env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "pip", "install", "-v", "--no-build-isolation", "--no-deps",
                           "--target", str(target), str(ROOT)], env=env, capture_output=True, text=True, check=False)


def run_installed(target, code, cache):
    env = {**os.environ, "PYTHONPATH": str(target), "TORCH_EXTENSIONS_DIR": str(cache)}
    # Run outside the checkout, so `import deepspeed_ext` cannot find the source tree.
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=target, capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.slow
def test_prebuilt_op_loads_without_jit(tmp_path):
    target = tmp_path / "site"
    installed = pip_install_target(target, DS_BUILD_OPS="1")
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    cache = tmp_path / "jit-cache"
    result = json.loads(run_installed(target, PROBE, cache).splitlines()[-1])
    assert result["file"].startswith(str(target))
    assert result["installed"] == "yes" and result["source"] == "prebuilt"
    assert result["param"][0] < 1.0
    assert not cache.exists()  # nothing was JIT-built
    report = json.loads(run_installed(target, "from deepspeed_ext.env_report import cli_main; cli_main(['--json'])",
                                      cache))
    assert report["ops"]["cpu_adam"]["installed"] is True
    table = run_installed(target, "from deepspeed_ext.env_report import cli_main; cli_main([])", cache)
    assert "cpu_adam ............... [YES] ....... [OKAY]" in table
    # The op sources ship inside the package, so a JIT build works from the install too.
    assert (target / "deepspeed_ext/ops/csrc/cpu_adam/cpu_adam_ops.cpp").exists()
    assert (target / "deepspeed_ext/ops/csrc/include/simd.h").exists()


@pytest.mark.slow
def test_incompatible_op_is_skipped_or_fails_when_forced(tmp_path):
    no_compiler = "/nonexistent/c++"
    skipped = pip_install_target(tmp_path / "skip", DS_BUILD_OPS="1", CXX=no_compiler)
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "skipping op cpu_adam: no C++ compiler" in skipped.stdout + skipped.stderr
    assert not list((tmp_path / "skip/deepspeed_ext/ops/prebuilt").glob("cpu_adam_*"))
    forced = pip_install_target(tmp_path / "forced", DS_BUILD_CPU_ADAM="1", CXX=no_compiler)
    assert forced.returncode != 0
    assert "DS_BUILD_CPU_ADAM=1 but op cpu_adam cannot be built here: no C++ compiler" in forced.stdout + forced.stderr
