"""Pipeline training equals single-process training of the same layers on the same global
batches: 2 and 4 stages, alone and with data parallelism, ZeRO-1, gradient accumulation,
clipping, an LR schedule, tied layers, tuple activations, both schedules; bf16 and fp16."""

import pytest
import torch

from tests.pipe import models
from tests.ranks import run_ranks

MICRO, ACCUMULATION, STEPS = 2, 4, 3
CLIP_AND_SCHEDULE = {"gradient_clipping": 0.05,
                     "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 2, "warmup_max_lr": 1e-2}}}


def assert_same(results, ref_losses, ref_state, exact: bool) -> None:
    state = results[0]["state"]
    assert sorted(state) == sorted(ref_state)
    for result in results:  # every stage reports the same batch loss
        assert result["losses"] == results[0]["losses"]
    if exact:
        for name, value in ref_state.items():
            assert torch.equal(state[name], value), name
    else:
        for name, value in ref_state.items():
            assert torch.allclose(state[name], value, rtol=0, atol=1e-6), (name, (state[name] - value).abs().max())
    assert results[0]["losses"] == pytest.approx(ref_losses, abs=1e-6)


@pytest.mark.parametrize("stages,world,kind,extra,exact", [
    (2, 2, "dense", {}, True),
    (4, 4, "dense", CLIP_AND_SCHEDULE, False),
    (2, 4, "dense", {"zero_optimization": {"stage": 1}, **CLIP_AND_SCHEDULE}, False),
    (2, 2, "tokens", CLIP_AND_SCHEDULE, False),
    (4, 8, "tokens", {"zero_optimization": {"stage": 1}, **CLIP_AND_SCHEDULE}, False),
    (2, 2, "tuple", {}, True),
], ids=["2x1", "4x1-clip-schedule", "2x2-zero1", "2x1-tied", "4x2-tied-zero1", "2x1-tuple"])
def test_pipeline_equals_single_process_training(stages, world, kind, extra, exact):
    results = run_ranks(models.train_pipeline, world, kind, stages, MICRO, ACCUMULATION, STEPS, extra)
    ref_losses, ref_state = models.reference(kind, MICRO, ACCUMULATION, STEPS, world // stages, extra)
    assert_same(results, ref_losses, ref_state, exact)
    assert all(r["steps"] == STEPS for r in results)


def test_zero_bubble_schedule_equals_1f1b_bit_for_bit():
    extra = {"pipeline": {"schedule": "zb_h1"}, **CLIP_AND_SCHEDULE}
    zero_bubble = run_ranks(models.train_pipeline, 4, "tokens", 4, MICRO, 8, STEPS, extra)
    one_f_one_b = run_ranks(models.train_pipeline, 4, "tokens", 4, MICRO, 8, STEPS, CLIP_AND_SCHEDULE)
    assert zero_bubble[0]["losses"] == one_f_one_b[0]["losses"]
    for name, value in one_f_one_b[0]["state"].items():
        assert torch.equal(zero_bubble[0]["state"][name], value), name
    # no stage holds more micro-batches than 1F1B's first stage does
    assert max(r["peak"] for r in zero_bubble) == 4 == one_f_one_b[0]["peak"]


def test_1f1b_holds_at_most_num_stages_micro_batches():
    results = run_ranks(models.train_pipeline, 4, "dense", 4, 1, 8, 1)
    assert [r["peak"] for r in results] == [4, 3, 2, 1]  # stage s holds p - s


def test_activation_checkpoint_interval_gives_the_same_training():
    plain = run_ranks(models.train_pipeline, 2, "dense", 2, MICRO, ACCUMULATION, 2)
    checkpointed = run_ranks(models.train_pipeline, 2, "dense", 2, MICRO, ACCUMULATION, 2, None,
                             {"activation_checkpoint_interval": 2})
    from_config = run_ranks(models.train_pipeline, 2, "dense", 2, MICRO, ACCUMULATION, 2,
                            {"pipeline": {"activation_checkpoint_interval": 1, "use_reentrant": False,
                                          "schedule": "zb_h1"}})
    for other in (checkpointed, from_config):
        assert other[0]["losses"] == plain[0]["losses"]
        for name, value in plain[0]["state"].items():
            assert torch.equal(other[0]["state"][name], value), name


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_16_bit_pipelines_train_like_fp32(precision):
    extra = {precision: {"enabled": True}, "gradient_clipping": 1.0}
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    results = run_ranks(models.train_pipeline, 2, "dense", 2, 4, 2, 6, extra, None, dtype)
    fp32 = run_ranks(models.train_pipeline, 2, "dense", 2, 4, 2, 6, {"gradient_clipping": 1.0})
    assert results[0]["losses"] == pytest.approx(fp32[0]["losses"], rel=0.03)
    assert results[0]["skipped"] == results[1]["skipped"] == 0


def test_fp16_overflow_skips_the_step_on_every_stage():
    # 2**40 overflows fp16 at once: the first steps are skipped everywhere and the scale halves
    extra = {"fp16": {"enabled": True, "initial_scale_power": 40, "hysteresis": 1}}
    results = run_ranks(models.train_pipeline, 4, "dense", 2, 2, 2, 3, extra, None, torch.float16)
    assert {r["skipped"] for r in results} == {3}
    ref = models.plain_model(models.dense_specs())
    for name, value in ref.state_dict().items():  # nothing moved on any stage
        assert torch.equal(results[0]["state"][name], value.half().float()), name
