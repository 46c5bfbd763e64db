"""ds_io, the async I/O throughput command: sizes parse as fio and DeepSpeed read them, and
both operations run on a file of exactly the size asked and print GB/s."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from deepspeed_ext.nvme.ds_io import parse_size


def test_sizes_parse_in_powers_of_1024():
    assert [parse_size(s) for s in ("4096", "64K", "1M", "2G", "1.5k", "3MiB")] == [4096, 65536, 2**20, 2 * 2**30,
                                                                                    1536, 3 * 2**20]
    for bad in ("", "1X", "-4K", "0"):
        with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
            parse_size(bad)


@pytest.mark.parametrize("operation", ["write", "read"])
def test_ds_io_measures_a_file_of_the_size_asked(tmp_path, operation):
    command = [sys.executable, "-m", "deepspeed_ext.nvme.ds_io", f"--{operation}", "--folder", str(tmp_path),
               "--io_size", "3M", "--block_size", "256K", "--queue_depth", "4", "--io_parallel", "2", "--loops", "2",
               "--validate", "--json"]
    result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    assert result["operation"] == operation and result["bytes"] == 3 * 2**20 and result["gbps"] > 0
    assert (tmp_path / f"ds_io_{3 * 2**20}.bin").stat().st_size == 3 * 2**20
    text = subprocess.run(command[:-1], capture_output=True, text=True, check=True).stdout
    assert f"ds_io {operation}: 3 MiB" in text and "GB/s" in text


def test_ds_io_names_a_bad_folder(tmp_path):
    missing = tmp_path / "nope"
    result = subprocess.run([sys.executable, "-m", "deepspeed_ext.nvme.ds_io", "--read", "--folder", str(missing)],
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "--folder" in result.stderr and str(missing) in result.stderr
