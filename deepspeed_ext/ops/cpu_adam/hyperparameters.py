"""Constructor checks the optimizers share, with messages that name the optimizer."""

from __future__ import annotations


def check_hyperparameters(optimizer: str, lr: float, eps: float = 0.0, weight_decay: float = 0.0,
                          betas: tuple[float, float] | None = None, amsgrad: bool = False,
                          beta_may_be_one: bool = False) -> None:
    if amsgrad:
        raise ValueError(f"{optimizer} does not implement amsgrad; use torch.optim.Adam(amsgrad=True)")
    if betas is not None:
        upper_ok = (lambda b: b <= 1.0) if beta_may_be_one else (lambda b: b < 1.0)
        if len(betas) != 2 or not all(0.0 <= b and upper_ok(b) for b in betas):
            interval = "[0, 1]" if beta_may_be_one else "[0, 1)"
            raise ValueError(f"{optimizer}: betas must be two values in {interval}, got {betas}")
    if lr < 0 or eps < 0 or weight_decay < 0:
        raise ValueError(f"{optimizer}: lr, eps and weight_decay must be non-negative, got {lr}, {eps}, {weight_decay}")
