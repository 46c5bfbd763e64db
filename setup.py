"""Install deepspeed_ext; with DS_BUILD_OPS=1 also prebuild every compatible op.

    pip install --no-build-isolation .                          # ops JIT-build on first use
    DS_BUILD_OPS=1 pip install --no-build-isolation .           # prebuild all compatible ops
    DS_BUILD_OPS=1 DS_BUILD_CPU_ADAM=0 pip install ...          # ... except one
    DS_BUILD_CPU_ADAM=1 pip install --no-build-isolation .      # just one (fails if incompatible)

The op sources ship inside the package (deepspeed_ext/ops/csrc, deepspeed_ext/ops/op_builder),
so JIT builds work from any install, not only from a checkout.
"""

import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import torch  # noqa: F401
except ImportError:
    sys.exit("deepspeed_ext compiles against the installed PyTorch: install torch first "
             "(e.g. pip install torch==2.13.0), then pip install --no-build-isolation .")

from op_builder import ALL_OPS


def requested(builder, build_all: bool) -> bool:
    value = os.environ.get(builder.BUILD_VAR)
    return build_all if value is None else value == "1"


def prebuilt_extensions() -> list:
    build_all = os.environ.get("DS_BUILD_OPS") == "1"
    extensions = []
    for builder_class in ALL_OPS.values():
        builder = builder_class()
        if not requested(builder, build_all):
            continue
        if builder.is_compatible():
            extensions.append(builder.builder())
            print(f"[deepspeed_ext] prebuilding op {builder.NAME}")
        elif os.environ.get(builder.BUILD_VAR) == "1":
            sys.exit(f"{builder.BUILD_VAR}=1 but op {builder.NAME} cannot be built here: {builder.incompatible_reason}")
        else:
            print(f"[deepspeed_ext] skipping op {builder.NAME}: {builder.incompatible_reason}")
    return extensions


os.chdir(HERE)  # the extension sources are given relative to the project root
extensions = prebuilt_extensions()
cmdclass = {}
if extensions:
    from torch.utils.cpp_extension import BuildExtension

    cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=True)

setup(
    packages=find_packages(include=["deepspeed_ext", "deepspeed_ext.*"])
    + ["deepspeed_ext.ops.op_builder", "deepspeed_ext.ops.csrc"],
    package_dir={"deepspeed_ext.ops.op_builder": "op_builder", "deepspeed_ext.ops.csrc": "csrc"},
    package_data={"deepspeed_ext.ops.csrc": ["**/*.h", "**/*.cuh", "**/*.cpp", "**/*.cu", "**/*.inc"]},
    ext_modules=extensions,
    cmdclass=cmdclass,
)
