"""The README's quick start: `deepspeed --num_gpus 2 examples/digits/ds_train.py ...` trains two
CPU ranks to >= 95% test accuracy (at stage 0, and under ZeRO-3 with CPU offload),
checkpoints every epoch, and evaluate.py draws its pictures."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.ranks import clean_environment, free_port

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits"


@pytest.mark.slow
@pytest.mark.parametrize("config", ["ds_config.json", "ds_config_zero3.json"])
def test_quick_start_trains_and_evaluates(tmp_path, config):
    env = clean_environment()
    trained = subprocess.run(
        [sys.executable, "-m", "deepspeed_ext.launcher.runner", "--num_gpus", "2", "--master_port", str(free_port()),
         str(DIGITS / "ds_train.py"), "--epochs", "10", "--output_dir", str(tmp_path), "--deepspeed",
         "--deepspeed_config", str(DIGITS / config)],
        env=env, capture_output=True, text=True, timeout=300, check=False)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "latest").read_text() == "global_step120"
    evaluated = subprocess.run([sys.executable, str(DIGITS / "evaluate.py"), "--output_dir", str(tmp_path)],
                               env=env, capture_output=True, text=True, timeout=120, check=False)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    accuracy = float(evaluated.stdout.split("test accuracy ")[1].split("%")[0])
    assert accuracy >= 95.0
    for picture in ("sample.png", "loss_curve.png"):
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
