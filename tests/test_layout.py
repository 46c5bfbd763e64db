"""The tree's naming rule: an op's name is its builder's NAME, and the same name is its builder
file, its csrc/ folder, its package under deepspeed_ext/ops/, its test and its benchmark.
DeepSpeed's module paths re-export the same objects."""

from pathlib import Path

import pytest

from deepspeed_ext.ops.op_builder import ALL_OPS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(ALL_OPS))
def test_one_name_per_op(name):
    builder = ALL_OPS[name]
    assert (ROOT / "op_builder" / f"{name}.py").is_file()
    assert (ROOT / "csrc" / name).is_dir()
    assert (ROOT / "deepspeed_ext" / "ops" / name / "__init__.py").is_file()
    assert (ROOT / "tests" / "ops" / f"test_{name}.py").is_file()
    assert (ROOT / "benchmarks" / f"{name}.py").is_file()
    # fused_adam's CPU path compiles cpu_adam's kernels; every other source is the op's own.
    own = [source for source in builder().sources() + builder().cuda_sources()
           if name == "cpu_adam" or not source.startswith("cpu_adam/")]
    assert own and all(source.startswith(f"{name}/") for source in own), own
    assert builder.__module__.endswith(f".{name}")


def test_deepspeed_module_paths_reexport_the_ops():
    from deepspeed_ext.ops import adagrad, adam, aio, async_io, cpu_adam, fused_adam, lion
    from deepspeed_ext.ops.op_builder import SparseAttentionBuilder, SparseAttnBuilder

    assert adam.DeepSpeedCPUAdam is cpu_adam.DeepSpeedCPUAdam and adam.FusedAdam is fused_adam.FusedAdam
    assert adagrad.DeepSpeedCPUAdagrad is cpu_adam.DeepSpeedCPUAdagrad and lion.DeepSpeedCPULion is cpu_adam.DeepSpeedCPULion
    assert aio.aio_handle is async_io.aio_handle
    assert SparseAttnBuilder is SparseAttentionBuilder
