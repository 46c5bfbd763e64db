"""DeepSpeed's learning-rate schedules: WarmupLR, WarmupDecayLR, WarmupCosineLR, OneCycle and
LRRangeTest, with DeepSpeed's parameter names and defaults (`scheduler` in the config).

Each schedule is stepped once per optimizer step. `last_batch_iteration` counts the steps
taken (-1 before the first); at construction with -1 the optimizer's lr is set to the
schedule's starting value. `state_dict()` holds that counter, as in DeepSpeed.
"""

from __future__ import annotations

import abc
import difflib
import inspect
import math
import warnings
from collections.abc import Sequence

import torch

from .config_schema import check_arguments

WARMUP_TYPES = ("log", "linear")


def _optimizer_of(optimizer) -> torch.optim.Optimizer:
    """The torch optimizer itself, also when a wrapper (a ZeRO optimizer) holds it."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    inner = getattr(optimizer, "optimizer", None)
    if isinstance(inner, torch.optim.Optimizer):
        return inner
    raise TypeError(f"{type(optimizer).__name__} is not a torch.optim.Optimizer (nor wraps one in .optimizer)")


class BatchLRScheduler(abc.ABC):
    """Base class: a subclass computes each param group's lr for a step in lrs_at()."""

    def __init__(self, optimizer, last_batch_iteration: int = -1) -> None:
        self.optimizer = _optimizer_of(optimizer)
        self.last_batch_iteration = last_batch_iteration

    def _per_group(self, value: float | Sequence[float], name: str) -> list[float]:
        groups = len(self.optimizer.param_groups)
        if isinstance(value, (list, tuple)):
            if len(value) != groups:
                raise ValueError(f"{type(self).__name__}: {name} has {len(value)} values for {groups} param groups")
            return [float(v) for v in value]
        return [float(value)] * groups

    def _start(self) -> None:
        """Set the starting lr of a fresh schedule (not of a resumed one)."""
        if self.last_batch_iteration == -1:
            self._apply()

    @abc.abstractmethod
    def lrs_at(self, iteration: int) -> list[float]:
        """Each param group's lr once `iteration` + 1 steps were taken (-1: none yet)."""

    def get_lr(self) -> list[float]:
        return self.lrs_at(self.last_batch_iteration)

    def _apply(self) -> None:
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def step(self, last_batch_iteration: int | None = None) -> None:
        self.last_batch_iteration = self.last_batch_iteration + 1 if last_batch_iteration is None \
            else last_batch_iteration
        self._apply()

    def get_last_lr(self) -> list[float]:
        if not hasattr(self, "_last_lr"):
            raise RuntimeError(f"{type(self).__name__}: call step() before get_last_lr()")
        return self._last_lr

    def state_dict(self) -> dict:
        return {"last_batch_iteration": self.last_batch_iteration}

    def load_state_dict(self, state: dict) -> None:
        self.last_batch_iteration = state["last_batch_iteration"]


class _Warmup:
    """The warmup fraction shared by the warmup schedules: 0 at step 0, rising to 1 at
    warmup_num_steps along log(step + 1) / log(steps) or step / steps."""

    def __init__(self, owner: str, warmup_num_steps: int, warmup_type: str) -> None:
        if not isinstance(warmup_num_steps, int) or isinstance(warmup_num_steps, bool) or warmup_num_steps <= 0:
            raise ValueError(f"{owner}: warmup_num_steps must be a positive integer, got {warmup_num_steps!r}")
        if warmup_type not in WARMUP_TYPES:
            raise ValueError(f"{owner}: warmup_type must be one of {WARMUP_TYPES}, got {warmup_type!r}")
        self.steps = max(2, warmup_num_steps)  # log warmup divides by log(steps)
        self.type = warmup_type

    def done(self, iteration: int) -> bool:
        return iteration >= self.steps

    def fraction(self, iteration: int) -> float:
        if self.type == "log":
            return math.log(iteration + 1) / math.log(self.steps)
        return iteration / self.steps


class WarmupLR(BatchLRScheduler):
    """lr rises from warmup_min_lr to warmup_max_lr over warmup_num_steps, then stays.
    warmup_max_lr defaults to each param group's lr."""

    def __init__(self, optimizer, warmup_min_lr: float | Sequence[float] = 0.0,
                 warmup_max_lr: float | Sequence[float] | None = None, warmup_num_steps: int = 1000,
                 warmup_type: str = "log", last_batch_iteration: int = -1) -> None:
        super().__init__(optimizer, last_batch_iteration)
        self.warmup = _Warmup(type(self).__name__, warmup_num_steps, warmup_type)
        self.min_lrs = self._per_group(warmup_min_lr, "warmup_min_lr")
        self.max_lrs = [g["lr"] for g in self.optimizer.param_groups] if warmup_max_lr is None \
            else self._per_group(warmup_max_lr, "warmup_max_lr")
        self._start()

    def _after_warmup(self, iteration: int) -> float:
        return 1.0

    def lrs_at(self, iteration: int) -> list[float]:
        if iteration < 0:
            return list(self.min_lrs)
        gamma = self._after_warmup(iteration) if self.warmup.done(iteration) else self.warmup.fraction(iteration)
        return [low + (high - low) * gamma for low, high in zip(self.min_lrs, self.max_lrs)]


class WarmupDecayLR(WarmupLR):
    """WarmupLR, then a linear decay that reaches 0 at total_num_steps."""

    def __init__(self, optimizer, total_num_steps: int, warmup_min_lr: float | Sequence[float] = 0.0,
                 warmup_max_lr: float | Sequence[float] = 0.001, warmup_num_steps: int = 1000,
                 warmup_type: str = "log", last_batch_iteration: int = -1) -> None:
        self.total_num_steps = total_num_steps
        super().__init__(optimizer, warmup_min_lr, warmup_max_lr, warmup_num_steps, warmup_type,
                         last_batch_iteration)
        if total_num_steps < self.warmup.steps:
            warnings.warn(f"WarmupDecayLR: total_num_steps {total_num_steps} is less than warmup_num_steps "
                          f"{self.warmup.steps}", stacklevel=2)

    def _after_warmup(self, iteration: int) -> float:
        return max(0.0, (self.total_num_steps - iteration) / max(1.0, self.total_num_steps - self.warmup.steps))


class WarmupCosineLR(BatchLRScheduler):
    """Scales each group's lr: from warmup_min_ratio up to 1 over warmup_num_steps, then down
    a half cosine to cos_min_ratio at total_num_steps, where it stays."""

    def __init__(self, optimizer, total_num_steps: int, warmup_min_ratio: float = 0.0, warmup_num_steps: int = 1000,
                 cos_min_ratio: float = 0.0001, warmup_type: str = "log", last_batch_iteration: int = -1) -> None:
        super().__init__(optimizer, last_batch_iteration)
        self.warmup = _Warmup(type(self).__name__, warmup_num_steps, warmup_type)
        self.total_num_steps = total_num_steps
        self.warmup_min_ratio = warmup_min_ratio
        self.cos_min_ratio = cos_min_ratio
        self.org_lrs = [g["lr"] for g in self.optimizer.param_groups]
        if total_num_steps < self.warmup.steps:
            warnings.warn(f"WarmupCosineLR: total_num_steps {total_num_steps} is less than warmup_num_steps "
                          f"{self.warmup.steps}", stacklevel=2)
        self._start()

    def lr_ratio(self, iteration: int) -> float:
        if iteration < 0:
            return 0.0
        if not self.warmup.done(iteration):
            return self.warmup_min_ratio + self.warmup.fraction(iteration) * (1.0 - self.warmup_min_ratio)
        progress = min(1.0, (iteration - self.warmup.steps + 1) / max(1, self.total_num_steps - self.warmup.steps))
        cosine = (1.0 + math.cos(math.pi * progress)) / 2.0
        return max(0.0, self.cos_min_ratio + (1.0 - self.cos_min_ratio) * cosine)

    def lrs_at(self, iteration: int) -> list[float]:
        ratio = self.lr_ratio(iteration)
        return [lr * ratio for lr in self.org_lrs]


class LRRangeTest(BatchLRScheduler):
    """lr grows from lr_range_test_min_lr by lr_range_test_step_rate every
    lr_range_test_step_size steps (continuously, or in stairs), to find the largest
    lr that still trains."""

    def __init__(self, optimizer, lr_range_test_min_lr: float | Sequence[float] = 1e-3,
                 lr_range_test_step_size: int = 2000, lr_range_test_step_rate: float = 1.0,
                 lr_range_test_staircase: bool = False, last_batch_iteration: int = -1) -> None:
        super().__init__(optimizer, last_batch_iteration)
        if lr_range_test_step_size <= 0:
            raise ValueError(f"LRRangeTest: lr_range_test_step_size must be positive, got {lr_range_test_step_size}")
        self.min_lrs = self._per_group(lr_range_test_min_lr, "lr_range_test_min_lr")
        self.step_size = lr_range_test_step_size
        self.step_rate = lr_range_test_step_rate
        self.staircase = lr_range_test_staircase
        self._start()

    def lrs_at(self, iteration: int) -> list[float]:
        intervals = (iteration + 1) / self.step_size
        if self.staircase:
            intervals = math.floor(intervals)
        return [lr * (1.0 + self.step_rate * intervals) for lr in self.min_lrs]


class OneCycle(BatchLRScheduler):
    """1cycle: lr climbs from cycle_min_lr to cycle_max_lr over cycle_first_step_size steps
    and back over cycle_second_step_size (optionally in stairs), then decays by
    decay_lr_rate every decay_step_size steps. Momentum (Adam's beta1, or SGD's momentum)
    moves the opposite way between cycle_max_mom and cycle_min_mom."""

    def __init__(self, optimizer, cycle_min_lr: float | Sequence[float], cycle_max_lr: float | Sequence[float],
                 decay_lr_rate: float = 0.0, cycle_first_step_size: int = 2000, cycle_second_step_size: int | None = None,
                 cycle_first_stair_count: int = 0, cycle_second_stair_count: int | None = None,
                 decay_step_size: int = 0, cycle_momentum: bool = True, cycle_min_mom: float = 0.8,
                 cycle_max_mom: float = 0.9, decay_mom_rate: float = 0.0, last_batch_iteration: int = -1) -> None:
        super().__init__(optimizer, last_batch_iteration)
        if cycle_first_step_size <= 0 or (cycle_second_step_size is not None and cycle_second_step_size <= 0):
            raise ValueError("OneCycle: cycle_first_step_size and cycle_second_step_size must be positive")
        self.first_size = float(cycle_first_step_size)
        self.second_size = float(cycle_second_step_size if cycle_second_step_size is not None
                                 else cycle_first_step_size)
        self.total_size = self.first_size + self.second_size
        self.first_stairs = cycle_first_stair_count
        self.second_stairs = cycle_first_stair_count if cycle_second_stair_count is None else cycle_second_stair_count
        self.min_lrs = self._per_group(cycle_min_lr, "cycle_min_lr")
        self.max_lrs = self._per_group(cycle_max_lr, "cycle_max_lr")
        self.decay_step_size = decay_step_size
        self.decay_lr_rate = decay_lr_rate
        self.decay_mom_rate = decay_mom_rate
        self.min_mom, self.max_mom = cycle_min_mom, cycle_max_mom
        self.momentum_key = self._momentum_key() if cycle_momentum else None
        self._start()

    def _momentum_key(self) -> str | None:
        defaults = self.optimizer.defaults
        if "betas" in defaults:
            return "betas"
        if "momentum" in defaults:
            return "momentum"
        warnings.warn(f"OneCycle: cycle_momentum is off: {type(self.optimizer).__name__} has neither betas nor "
                      "momentum", stacklevel=3)
        return None

    def _scale(self, iteration: int) -> float:
        """Position in the cycle: 0 at cycle_min_lr, 1 at the peak."""
        offset = (iteration + 1) % self.total_size
        rising = offset <= self.first_size
        stairs = self.first_stairs if rising else self.second_stairs
        distance, size = (offset, self.first_size) if rising else (self.total_size - offset, self.second_size)
        if stairs > 0:  # from the integer distance, so no rounding drops the peak a stair
            return math.floor(distance * stairs / size) / stairs
        return distance / size

    def _decays(self, rate: float) -> bool:
        return not math.isclose(self.decay_step_size, 0) and not math.isclose(rate, 0)

    def lrs_at(self, iteration: int) -> list[float]:
        if iteration < self.total_size:
            scale = self._scale(iteration)
            return [low + (high - low) * scale for low, high in zip(self.min_lrs, self.max_lrs)]
        if not self._decays(self.decay_lr_rate):
            return list(self.min_lrs)
        intervals = (iteration - self.total_size + 1) / self.decay_step_size
        return [lr / (1.0 + self.decay_lr_rate * intervals) for lr in self.min_lrs]

    def momentum_at(self, iteration: int) -> float:
        if iteration < self.total_size:
            return self.max_mom - (self.max_mom - self.min_mom) * self._scale(iteration)
        if not self._decays(self.decay_mom_rate):
            return self.max_mom
        intervals = (iteration - self.total_size + 1) / self.decay_step_size
        return self.max_mom * (1.0 + self.decay_mom_rate * intervals)

    def _apply(self) -> None:
        super()._apply()
        if self.momentum_key is None:
            return
        momentum = self.min_mom if self.last_batch_iteration < 0 else self.momentum_at(self.last_batch_iteration)
        for group in self.optimizer.param_groups:
            if self.momentum_key == "betas":
                group["betas"] = (momentum, group["betas"][1])
            else:
                group["momentum"] = momentum


SCHEDULES: dict[str, type[BatchLRScheduler]] = {
    cls.__name__: cls for cls in (WarmupLR, WarmupDecayLR, WarmupCosineLR, OneCycle, LRRangeTest)
}
# DeepSpeed's names for them (Accelerate checks a scheduler's class name against VALID_LR_SCHEDULES)
LR_RANGE_TEST, ONE_CYCLE, WARMUP_LR, WARMUP_DECAY_LR, WARMUP_COSINE_LR = (
    "LRRangeTest", "OneCycle", "WarmupLR", "WarmupDecayLR", "WarmupCosineLR")
VALID_LR_SCHEDULES = [LR_RANGE_TEST, ONE_CYCLE, WARMUP_LR, WARMUP_DECAY_LR, WARMUP_COSINE_LR]


def build_schedule(name: str, optimizer, params: dict, where: str = "scheduler") -> BatchLRScheduler:
    """The schedule `name` with `params` (the config's scheduler.type / scheduler.params).
    An unknown name or parameter raises an error naming the config key and the closest
    valid spelling."""
    if name not in SCHEDULES:
        raise ValueError(f"{where}.type: unknown scheduler {name!r}{_suggest(name, SCHEDULES)}; "
                         f"choose from {', '.join(SCHEDULES)}")
    schedule = SCHEDULES[name]
    accepted = [p for p in inspect.signature(schedule.__init__).parameters if p not in ("self", "optimizer")]
    for key in params:
        if key not in accepted:
            raise ValueError(f"{where}.params.{key}: not a parameter of {name}{_suggest(key, accepted)}; "
                             f"it takes {', '.join(accepted)}")
    check_arguments(params, schedule.__init__, f"{where}.params")
    return schedule(optimizer, **params)


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
