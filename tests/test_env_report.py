"""ds_report: the table and environment sections, --json, --build, and the checkout script."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from deepspeed_ext.env_report import cli_main

ROOT = Path(__file__).resolve().parent.parent


def test_report_lists_ops_and_environment(capsys):
    cli_main([])
    out = capsys.readouterr().out
    assert "ninja .................. [OKAY]" in out
    assert "op name ................ installed .. compatible" in out
    assert "cpu_adam ............... [NO] ....... [OKAY]" in out
    for label in ("torch install path", "torch version", "deepspeed_ext install path", "nvcc version",
                  "shared memory (/dev/shm) size", "cpu simd level", "import deepspeed"):
        assert label in out


def test_report_says_which_deepspeed_imports(monkeypatch):
    from deepspeed_ext import env_report
    from deepspeed_ext.version import COMPAT_VERSION

    assert env_report.deepspeed_module() == f"{COMPAT_VERSION}: deepspeed_ext's compat package"
    monkeypatch.setattr(env_report.importlib.metadata, "version", lambda name: "0.19.8")
    assert env_report.deepspeed_module().startswith("0.19.8 at ") and "not deepspeed_ext" in \
        env_report.deepspeed_module()
    monkeypatch.setattr(env_report.importlib.util, "find_spec", lambda name: None)
    assert env_report.deepspeed_module().startswith("not installed")


def test_hide_operator_status(capsys):
    cli_main(["--hide_operator_status"])
    out = capsys.readouterr().out
    assert "op name" not in out and "cpu_adam" not in out
    assert "torch version" in out


def test_json_report_parses(capsys, monkeypatch):
    monkeypatch.setenv("DS_SIMD", "scalar")
    cli_main(["--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["ops"]["cpu_adam"]["compatible"] is True
    assert report["environment"]["cpu simd level"] == "scalar"
    assert report["environment"]["DS_SIMD"] == "scalar"
    assert report["ops"]["fused_adam"]["cuda"] is (torch.version.cuda is not None and shutil.which("nvcc") is not None)
    assert "ops with CUDA kernels" in report["environment"]


def test_build_reports_each_op(capsys):
    try:
        cli_main(["--build", "--json"])
    except SystemExit as done:
        assert done.code == 0
    result = json.loads(capsys.readouterr().out)["build"]["cpu_adam"]
    assert result["status"] in ("jit-build", "jit-cache")
    assert result["seconds"] >= 0 and Path(result["path"]).exists()


def test_checkout_script_runs_the_same_report():
    out = subprocess.run([sys.executable, str(ROOT / "ds_report"), "--json"], capture_output=True, text=True,
                         check=True).stdout
    assert "cpu_adam" in json.loads(out)["ops"]
