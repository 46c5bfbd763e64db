"""The LR schedules against their formulas, written out here independently, step by step."""

import math

import pytest
import torch

from deepspeed_ext.runtime.lr_schedules import (
    LRRangeTest,
    OneCycle,
    WarmupCosineLR,
    WarmupDecayLR,
    WarmupLR,
    build_schedule,
)


def optimizer(lr=0.1, groups=1, kind=torch.optim.AdamW):
    return kind([{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(groups)], lr=lr)


def lrs_over(schedule, steps):
    """lr of group 0 after construction and after each of `steps` steps."""
    seen = [schedule.optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        schedule.step()
        seen.append(schedule.optimizer.param_groups[0]["lr"])
    return seen


@pytest.mark.parametrize("warmup_type", ["log", "linear"])
def test_warmup_lr(warmup_type):
    seen = lrs_over(WarmupLR(optimizer(), 0.01, 0.11, warmup_num_steps=10, warmup_type=warmup_type), 15)
    assert seen[0] == pytest.approx(0.01)
    for iteration, lr in enumerate(seen[1:]):
        gamma = (math.log(iteration + 1) / math.log(10) if warmup_type == "log" else iteration / 10) \
            if iteration < 10 else 1.0
        assert lr == pytest.approx(0.01 + 0.1 * gamma)


def test_warmup_decay_lr_reaches_zero_at_total_steps():
    seen = lrs_over(WarmupDecayLR(optimizer(), total_num_steps=30, warmup_min_lr=0.0, warmup_max_lr=0.1,
                                  warmup_num_steps=10, warmup_type="linear"), 35)
    for iteration, lr in enumerate(seen[1:]):
        expected = 0.1 * iteration / 10 if iteration < 10 else 0.1 * max(0.0, (30 - iteration) / 20)
        assert lr == pytest.approx(expected)
    assert seen[-1] == 0.0


def test_warmup_cosine_lr_scales_each_group():
    opt = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1},
                             {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.02}])
    schedule = WarmupCosineLR(opt, total_num_steps=20, warmup_min_ratio=0.1, warmup_num_steps=5,
                              cos_min_ratio=0.01, warmup_type="linear")
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0]
    for iteration in range(30):
        schedule.step()
        if iteration < 5:
            ratio = 0.1 + 0.9 * iteration / 5
        else:
            progress = min(1.0, (iteration - 5 + 1) / 15)
            ratio = 0.01 + 0.99 * (1 + math.cos(math.pi * progress)) / 2
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * ratio, 0.02 * ratio])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.01)


@pytest.mark.parametrize("staircase", [False, True])
def test_lr_range_test(staircase):
    seen = lrs_over(LRRangeTest(optimizer(), lr_range_test_min_lr=0.001, lr_range_test_step_size=4,
                                lr_range_test_step_rate=2.0, lr_range_test_staircase=staircase), 12)
    assert seen[0] == 0.001
    for iteration, lr in enumerate(seen[1:]):
        intervals = (iteration + 1) / 4
        intervals = math.floor(intervals) if staircase else intervals
        assert lr == pytest.approx(0.001 * (1 + 2.0 * intervals))


def test_one_cycle_lr_and_momentum():
    opt = optimizer()
    schedule = OneCycle(opt, cycle_min_lr=0.01, cycle_max_lr=0.1, cycle_first_step_size=4,
                        cycle_second_step_size=6, decay_lr_rate=0.5, decay_step_size=2, decay_mom_rate=0.1,
                        cycle_min_mom=0.85, cycle_max_mom=0.95)
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[0]["betas"] == (0.85, 0.999)
    for iteration in range(16):
        schedule.step()
        offset = (iteration + 1) % 10  # steps into the 4-up, 6-down cycle
        if iteration < 10:
            scale = offset / 4 if offset <= 4 else (10 - offset) / 6
            lr, mom = 0.01 + 0.09 * scale, 0.95 - 0.1 * scale
        else:
            intervals = (iteration - 10 + 1) / 2
            lr, mom = 0.01 / (1 + 0.5 * intervals), 0.95 * (1 + 0.1 * intervals)
        assert opt.param_groups[0]["lr"] == pytest.approx(lr)
        assert opt.param_groups[0]["betas"][0] == pytest.approx(mom)
        assert opt.param_groups[0]["betas"][1] == 0.999  # beta2 is left alone


def test_one_cycle_stairs_keep_the_peak_and_cycle_sgd_momentum():
    opt = optimizer(kind=lambda groups, lr: torch.optim.SGD(groups, lr=lr, momentum=0.9))
    schedule = OneCycle(opt, 0.0, 1.0, cycle_first_step_size=3, cycle_second_step_size=3, cycle_first_stair_count=3)
    seen = lrs_over(schedule, 6)
    assert seen[1:] == pytest.approx([1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3, 0.0])
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.9)


def test_state_dict_resumes_the_schedule():
    first = WarmupDecayLR(optimizer(), total_num_steps=50, warmup_num_steps=10)
    lrs_over(first, 17)
    resumed_opt = optimizer()
    resumed = WarmupDecayLR(resumed_opt, total_num_steps=50, warmup_num_steps=10, last_batch_iteration=16)
    resumed.load_state_dict(first.state_dict())
    first.step()
    resumed.step()
    assert resumed.get_last_lr() == first.get_last_lr()


def test_per_group_values_and_errors():
    schedule = WarmupLR(optimizer(groups=2), warmup_min_lr=[0.0, 0.5], warmup_max_lr=[1.0, 1.5],
                        warmup_num_steps=2, warmup_type="linear")
    schedule.step()
    schedule.step()
    assert schedule.get_last_lr() == pytest.approx([0.5, 1.0])
    with pytest.raises(ValueError, match="warmup_min_lr has 3 values for 2 param groups"):
        WarmupLR(optimizer(groups=2), warmup_min_lr=[0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match="warmup_type must be one of"):
        WarmupLR(optimizer(), warmup_type="linaer")
    with pytest.raises(ValueError, match="warmup_num_steps must be a positive integer"):
        WarmupCosineLR(optimizer(), total_num_steps=10, warmup_num_steps=0)
    with pytest.raises(RuntimeError, match="call step"):
        LRRangeTest(optimizer(), last_batch_iteration=5).get_last_lr()
    with pytest.raises(TypeError, match="not a torch.optim.Optimizer"):
        WarmupLR(object())


def test_build_schedule_names_the_config_key():
    schedule = build_schedule("WarmupLR", optimizer(), {"warmup_num_steps": 5, "warmup_max_lr": 0.2})
    assert isinstance(schedule, WarmupLR) and schedule.max_lrs == [0.2]
    with pytest.raises(ValueError, match=r"scheduler.type: unknown scheduler 'WarmupLr' \(did you mean 'WarmupLR'\?\)"):
        build_schedule("WarmupLr", optimizer(), {})
    with pytest.raises(ValueError, match=r"scheduler.params.warmup_num_step: .*did you mean 'warmup_num_steps'"):
        build_schedule("WarmupDecayLR", optimizer(), {"total_num_steps": 10, "warmup_num_step": 5})
