#!/usr/bin/env bash
# The test command (README.md, .ci/run): install everything, then run the whole suite with
# one JIT build cache shared by every test of the run. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"
# Where nvcc exists, also compile and link every CUDA source against a CUDA build of torch
# (tests/ops/test_cuda_build.py; the first run installs that torch into a cached venv).
if command -v nvcc >/dev/null 2>&1; then
  export DS_TEST_CUDA_BUILD="${DS_TEST_CUDA_BUILD:-1}"
fi
exec "${PYTHON:-python3}" -m pytest -q --durations=15 tests "$@"
