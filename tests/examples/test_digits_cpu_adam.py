"""The quick-start example trains to a useful accuracy (fp32 and bf16 params)."""

import importlib.util
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits_cpu_adam.py"


def load_example():
    spec = importlib.util.spec_from_file_location("digits_cpu_adam", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dtype, floor", [(torch.float32, 0.95), (torch.bfloat16, 0.93)])
def test_digits_example_learns(dtype, floor):
    losses = []
    accuracy = load_example().train(epochs=15, dtype=dtype, log=losses.append)
    assert accuracy >= floor
    first, last = (float(line.split()[-1]) for line in (losses[0], losses[-1]))
    assert last < first / 5
