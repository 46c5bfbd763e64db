#!/usr/bin/env bash
# Installs everything deepspeed_ext needs on a Debian/Ubuntu machine that has only Python:
# a C++ compiler, libaio-dev and fio, PyTorch (CPU build 2.13.0 unless TORCH_SPEC names
# another), this package in editable mode with its test extras, and the `deepspeed` compat
# package. Safe to run again; it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

# System packages: a C++ compiler, libaio's headers (the async_io op) and fio (its benchmark peer).
missing=()
command -v g++ >/dev/null 2>&1 || missing+=(g++)
[ -f /usr/include/libaio.h ] || missing+=(libaio-dev)
command -v fio >/dev/null 2>&1 || missing+=(fio)
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "deepspeed_ext needs ${missing[*]}: install them with your package manager and run this again" >&2
    exit 1
  fi
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Torch first and pinned: the package builds against whatever torch is installed, and an
# unpinned requirement would pull a multi-GB CUDA build.
"$PYTHON" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
"$PYTHON" -m pip install -q --no-build-isolation -e ".[test]"
# The opt-in `deepspeed` compat package (DeepSpeed's module paths over deepspeed_ext), which the
# Hugging Face tests need. It replaces a Microsoft DeepSpeed installed here (both are `deepspeed`).
"$PYTHON" -m pip install -q --no-build-isolation -e ./compat/deepspeed
