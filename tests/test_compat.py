"""The opt-in `deepspeed` distribution (compat/deepspeed): DeepSpeed's module paths, each name
the deepspeed_ext object it stands for; its version; what Transformers and Accelerate see;
and what pip does when it meets a real DeepSpeed."""

import importlib
import importlib.metadata
import subprocess
import venv
import zipfile
from types import ModuleType

import pytest

import deepspeed_ext
from deepspeed_ext.version import COMPAT_VERSION
from tests.ranks import ROOT, child_environment

# compat module -> the deepspeed_ext module whose objects it re-exports
MODULES = {
    "deepspeed": "deepspeed_ext",
    "deepspeed.accelerator": "deepspeed_ext.accelerator",
    "deepspeed.comm": "deepspeed_ext.comm",
    "deepspeed.ops": "deepspeed_ext.ops",
    "deepspeed.ops.adam": "deepspeed_ext.ops.adam",
    "deepspeed.ops.adagrad": "deepspeed_ext.ops.adagrad",
    "deepspeed.ops.lion": "deepspeed_ext.ops.lion",
    "deepspeed.ops.aio": "deepspeed_ext.ops.aio",
    "deepspeed.ops.quantizer": "deepspeed_ext.ops.quantizer",
    "deepspeed.ops.sparse_attention": "deepspeed_ext.ops.sparse_attention",
    "deepspeed.ops.op_builder": "deepspeed_ext.ops.op_builder",
    "deepspeed.utils": "deepspeed_ext.utils",
    "deepspeed.utils.groups": "deepspeed_ext.utils.groups",
    "deepspeed.utils.zero_to_fp32": "deepspeed_ext.utils.zero_to_fp32",
    "deepspeed.runtime.engine": "deepspeed_ext.runtime.engine",
    "deepspeed.runtime.config": "deepspeed_ext.runtime.config",
    "deepspeed.runtime.lr_schedules": "deepspeed_ext.runtime.lr_schedules",
    "deepspeed.runtime.activation_checkpointing.checkpointing": "deepspeed_ext.runtime.activation_checkpointing",
    "deepspeed.runtime.utils": "deepspeed_ext.runtime.nested",
    "deepspeed.runtime.zero": "deepspeed_ext.zero",
    "deepspeed.runtime.zero.partition_parameters": "deepspeed_ext.runtime.zero.partition_parameters",
    "deepspeed.checkpoint.utils": "deepspeed_ext.runtime.nested",
    "deepspeed.launcher.runner": "deepspeed_ext.launcher.runner",
    "deepspeed.sequence.layer": "deepspeed_ext.sequence.layer",
    "deepspeed.pipe": "deepspeed_ext.pipe",
    "deepspeed.runtime.pipe": "deepspeed_ext.pipe",
    "deepspeed.runtime.pipe.module": "deepspeed_ext.pipe.module",
    "deepspeed.runtime.pipe.topology": "deepspeed_ext.pipe.topology",
    "deepspeed.runtime.pipe.schedule": "deepspeed_ext.pipe.schedule",
    "deepspeed.runtime.pipe.engine": "deepspeed_ext.pipe.engine",
    "deepspeed.moe": "deepspeed_ext.moe",
    "deepspeed.moe.layer": "deepspeed_ext.moe.layer",
    "deepspeed.moe.experts": "deepspeed_ext.moe.experts",
    "deepspeed.moe.sharded_moe": "deepspeed_ext.moe.sharded_moe",
    "deepspeed.moe.utils": "deepspeed_ext.moe.utils",
}
# names a compat module takes from elsewhere in deepspeed_ext than its main source
ELSEWHERE = {("deepspeed", "DeepSpeedEngine"), ("deepspeed", "__version__"), ("deepspeed", "__deepspeed_ext_version__"),
             ("deepspeed.runtime.config", "DeepSpeedConfigError"),
             ("deepspeed.runtime.zero", "partition_parameters")}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_name_is_the_deepspeed_ext_object(name):
    compat, source = importlib.import_module(name), importlib.import_module(MODULES[name])
    assert compat.__all__, name
    for attribute in compat.__all__:
        value = getattr(compat, attribute)
        if (name, attribute) in ELSEWHERE or (isinstance(value, ModuleType) and value.__name__.startswith("deepspeed.")):
            continue  # a compat submodule is checked under its own name
        assert value is getattr(source, attribute), f"{name}.{attribute}"


def test_top_level_and_version():
    import deepspeed

    from deepspeed_ext.runtime.engine import DeepSpeedEngine

    assert deepspeed.initialize is deepspeed_ext.initialize and deepspeed.DeepSpeedEngine is DeepSpeedEngine
    assert deepspeed.zero is deepspeed_ext.zero and deepspeed.init_inference is deepspeed_ext.init_inference
    assert deepspeed.checkpointing is deepspeed_ext.checkpointing
    assert deepspeed.__version__ == COMPAT_VERSION == importlib.metadata.version("deepspeed")
    assert COMPAT_VERSION.startswith("0.19.8+dsext.") and deepspeed.__deepspeed_ext_version__ == deepspeed_ext.__version__
    assert sorted(deepspeed.ops.__compatible_ops__) == sorted(deepspeed_ext.ops.op_builder.ALL_OPS)
    assert deepspeed.runtime.lr_schedules.VALID_LR_SCHEDULES == ["LRRangeTest", "OneCycle", "WarmupLR",
                                                                 "WarmupDecayLR", "WarmupCosineLR"]
    assert deepspeed.launcher.runner.DEEPSPEED_ENVIRONMENT_NAME == ".deepspeed_env"


def test_transformers_and_accelerate_find_it():
    from accelerate.utils import compare_versions
    from accelerate.utils import is_deepspeed_available as accelerate_sees
    from transformers.integrations.deepspeed import is_deepspeed_available as transformers_sees
    from transformers.utils.versions import require_version

    assert transformers_sees() and accelerate_sees()
    require_version("deepspeed>=0.9.3")  # Transformers' check
    assert compare_versions("deepspeed", ">=", "0.11.0")  # Accelerate's (for DeepSpeedCPULion)


def _fake_deepspeed_wheel(folder) -> str:
    """A wheel of a distribution named deepspeed 0.19.8 (standing in for Microsoft's)."""
    wheel = folder / "deepspeed-0.19.8-py3-none-any.whl"
    info = "deepspeed-0.19.8.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("deepspeed/__init__.py", "WHOSE = 'microsoft'\n")
        archive.writestr("deepspeed/only_in_microsofts.py", "")
        archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: deepspeed\nVersion: 0.19.8\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return str(wheel)


@pytest.mark.slow
def test_installing_over_a_real_deepspeed_replaces_it(tmp_path):
    """Both are the distribution `deepspeed`: pip uninstalls the one there before installing
    the other, so the two never mix (either way round)."""
    venv.create(tmp_path / "env", system_site_packages=True)  # the system pip and setuptools, installing here
    python = str(tmp_path / "env" / "bin" / "python")
    env = child_environment()

    def run(*args):
        done = subprocess.run([python, *args], env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    probe = ("import importlib.metadata, importlib.util, deepspeed; "
             "print(importlib.metadata.version('deepspeed'), getattr(deepspeed, 'WHOSE', 'dsext'), "
             "importlib.util.find_spec('deepspeed.only_in_microsofts') is not None)")
    install = ["-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation"]
    run(*install, _fake_deepspeed_wheel(tmp_path))
    assert run("-c", probe).split() == ["0.19.8", "microsoft", "True"]
    output = run(*install, "-v", f"{ROOT}/compat/deepspeed")
    assert "Successfully uninstalled deepspeed-0.19.8" in output
    assert run("-c", probe).split() == [COMPAT_VERSION, "dsext", "False"]
    output = run(*install, "-v", _fake_deepspeed_wheel(tmp_path))
    assert f"Successfully uninstalled deepspeed-{COMPAT_VERSION}" in output
    assert run("-c", probe).split() == ["0.19.8", "microsoft", "True"]
