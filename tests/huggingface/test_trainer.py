"""Hugging Face's Trainer on deepspeed_ext (through the `deepspeed` compat package): a small
random-init GPT-2 on 2 CPU ranks, with HF's "auto" config templates, under our launcher and
under torchrun, against the same Trainer without DeepSpeed (plain DDP)."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import GPT2LMHeadModel

from tests.huggingface import jobs
from tests.ranks import child_environment, free_port, run_ranks

# Same math as plain DDP (the Trainer's own LR schedule: "+hf_schedule"); what remains is the
# order of float sums in the reductions.
TOLERANCE = 1e-5
TIMEOUT = 600


def _launched_results(command: list[str], folder) -> list[dict]:
    done = subprocess.run(command, cwd=folder, env=child_environment(), capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads((folder / f"result{rank}.json").read_text()) for rank in range(2)]


@pytest.mark.slow
def test_trainer_zero2_under_deepspeed_and_zero3_under_torchrun_match_ddp(tmp_path):
    ddp = run_ranks(jobs.train_gpt2, 2, None, str(tmp_path / "ddp"), timeout=TIMEOUT)
    (tmp_path / "zero2").mkdir()
    (tmp_path / "zero3").mkdir()
    job = ["--module", "tests.huggingface.jobs", "trainer_to_file"]
    zero2 = _launched_results([sys.executable, "-m", "deepspeed_ext.launcher.runner", "--num_gpus", "2",
                               "--master_port", str(free_port()), *job, "ZERO2+hf_schedule", str(tmp_path / "zero2")],
                              tmp_path / "zero2")
    zero3 = _launched_results([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", str(free_port()), "-m", "tests.huggingface.jobs", "trainer_to_file",
                               "ZERO3+hf_schedule", str(tmp_path / "zero3")], tmp_path / "zero3")
    for result in (*zero2, *zero3):
        assert len(result["losses"]) == 4
        # same initial weights (at ZeRO-3 built inside zero.Init), same first micro-batches: same first loss
        assert result["losses"][0] == ddp[0]["losses"][0]
        assert result["losses"] == pytest.approx(ddp[0]["losses"], abs=TOLERANCE)
        assert result["eval_loss"] == pytest.approx(ddp[0]["eval_loss"], abs=TOLERANCE)
        assert result["predict_loss"] == pytest.approx(ddp[0]["predict_loss"], abs=TOLERANCE)
    # ZeRO-2 and ZeRO-3 run the same math
    assert zero3[0]["losses"] == pytest.approx(zero2[0]["losses"], abs=1e-6)
    assert zero3[0]["eval_loss"] == pytest.approx(zero2[0]["eval_loss"], abs=1e-6)


@pytest.mark.slow
def test_trainer_zero3_offload_saves_a_loadable_model_and_resumes(tmp_path):
    full = run_ranks(jobs.train_gpt2, 2, "ZERO3_OFFLOAD", str(tmp_path), 4, 2, False, True, timeout=TIMEOUT)
    saved = GPT2LMHeadModel.from_pretrained(full[0]["saved"])
    for name, param in saved.named_parameters():
        assert torch.equal(param.detach(), full[0]["trained"][name]), name
    # resume from the step-2 checkpoint: steps 3 and 4 repeat the uninterrupted run's losses
    (tmp_path / "checkpoint-4").rename(tmp_path / "uninterrupted-4")
    resumed = run_ranks(jobs.train_gpt2, 2, "ZERO3_OFFLOAD", str(tmp_path), 4, 2, True, False, timeout=TIMEOUT)
    assert resumed[0]["losses"][2:] == pytest.approx(full[0]["losses"][2:], abs=1e-6)
    assert resumed[0]["eval_loss"] == pytest.approx(full[0]["eval_loss"], abs=1e-6)


def test_evaluate_and_predict_without_training_at_zero3_match_ddp(tmp_path):
    zero3 = run_ranks(jobs.evaluate_only, 2, "ZERO3", str(tmp_path / "zero3"), timeout=TIMEOUT)
    ddp = run_ranks(jobs.evaluate_only, 2, None, str(tmp_path / "ddp"), timeout=TIMEOUT)
    assert zero3[0] == pytest.approx(ddp[0], abs=1e-6)


def test_zero3_from_config_and_from_pretrained_give_the_plain_weights(tmp_path):
    for result in run_ranks(jobs.zero3_from_config_and_pretrained, 2, str(tmp_path), timeout=TIMEOUT):
        for way in ("from_config", "from_pretrained"):
            assert result[way] == {"partitioned": True, "max_difference": 0.0}, way
