"""Plain-torch references for the CPU optimizers, one elementwise op per rounding step in
the same order as csrc/include/optimizer_math.h, so the kernels must match them bit for bit."""

import math


def exact_sqrt(x):
    """Correctly rounded fp32 sqrt (as sqrtss / vsqrtps compute it). torch.sqrt on the CPU is
    not: it disagrees in the last bit for about a fifth of inputs. Rounding the float64
    root to float32 is exact, since float64 carries more than twice float32's precision."""
    return x.double().sqrt().float()


def adam_reference(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
                   bias_correction=True, adamw_mode=True):
    """Updates fp32 tensors in place (callers widen low-precision tensors first)."""
    bc1 = 1 - beta1**step if bias_correction else 1.0
    inv_bc2_sqrt = 1 / math.sqrt(1 - beta2**step) if bias_correction else 1.0
    if not adamw_mode and weight_decay:
        grad = grad + param * weight_decay
    if adamw_mode and weight_decay:
        param.mul_(1 - lr * weight_decay)
    exp_avg.copy_(exp_avg * beta1 + grad * (1 - beta1))
    exp_avg_sq.copy_(exp_avg_sq * beta2 + (grad * grad) * (1 - beta2))
    denom = exact_sqrt(exp_avg_sq) * inv_bc2_sqrt + eps
    param.copy_(param + (exp_avg / denom) * (-lr / bc1))


def adagrad_reference(param, grad, state_sum, lr, eps, weight_decay):
    if weight_decay:
        grad = grad + param * weight_decay
    state_sum.copy_(state_sum + grad * grad)
    param.copy_(param + (grad / (exact_sqrt(state_sum) + eps)) * -lr)


def lion_reference(param, grad, exp_avg, lr, beta1, beta2, weight_decay):
    direction = exp_avg * beta1 + grad * (1 - beta1)
    param.mul_(1 - lr * weight_decay)
    param.copy_(param + direction.sign() * -lr)
    exp_avg.copy_(exp_avg * beta2 + grad * (1 - beta2))
