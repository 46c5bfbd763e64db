#!/usr/bin/env bash
# The test command (README.md, .ci/run): install everything, then run the whole suite with
# one JIT build cache shared by every test of the run. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"
exec "${PYTHON:-python3}" -m pytest -q tests "$@"
