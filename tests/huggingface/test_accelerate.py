"""Accelerate driving deepspeed_ext: a hand-written loop with DeepSpeedPlugin at ZeRO-2 and
ZeRO-3 under `accelerate launch`, against the same loop without DeepSpeed."""

import json
import subprocess
import sys

import pytest

from tests.ranks import child_environment, free_port


def accelerate_launch(stage: str, folder) -> list[dict]:
    mode = ["--multi_gpu"] if stage == "ddp" else ["--use_deepspeed", "--zero_stage", stage]
    command = [sys.executable, "-m", "accelerate.commands.launch", *mode, "--gradient_accumulation_steps", "2",
               "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "tests.huggingface.jobs", "accelerate_loop", stage,
               str(folder)]
    done = subprocess.run(command, cwd=folder, env=child_environment(), capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads((folder / f"accelerate{rank}.json").read_text()) for rank in range(2)]


@pytest.mark.slow
def test_accelerate_loop_at_zero2_and_zero3_matches_ddp(tmp_path):
    results = {}
    for stage in ("ddp", "2", "3"):
        (tmp_path / stage).mkdir()
        results[stage] = accelerate_launch(stage, tmp_path / stage)
    ddp = results["ddp"][0]
    for stage in ("2", "3"):
        for result in results[stage]:
            # gradient accumulation over 2 micro-batches, as Accelerate's own: the same losses
            assert result["first"] == pytest.approx(ddp["first"], abs=1e-5), stage
            assert result["after_save"] == pytest.approx(ddp["after_save"], abs=1e-5), stage
            # load_state restored the model and optimizer exactly as save_state left them
            assert result["after_load"] == result["after_save"], stage
            assert result["skipped"] is False
        # get_state_dict gave rank 0 the whole model (at ZeRO-3: gathered from the shards)
        assert results[stage][0]["whole_state_dict"] and results[stage][0]["state_dict_keys"] == ddp["state_dict_keys"]
