#!/usr/bin/env bash
# Makes (or reuses) a virtual environment with a CUDA build of PyTorch and this package,
# so the CUDA sources can be compiled *and linked* on a machine without a GPU. Prints the
# environment's python. The CUDA wheel is ~5.5 GB installed, so the environment is kept
# in the user's cache and reused by later runs.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${DS_CUDA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/deepspeed_ext/cuda-torch-venv}"
if ! "$venv/bin/python" -c "import sys, torch; sys.exit(torch.version.cuda is None)" >/dev/null 2>&1; then
  "${PYTHON:-python3}" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install -q "${CUDA_TORCH_SPEC:-torch==2.14.1}" numpy ninja setuptools wheel >&2
fi
"$venv/bin/python" -m pip install -q --no-build-isolation --no-deps -e . >&2
echo "$venv/bin/python"
