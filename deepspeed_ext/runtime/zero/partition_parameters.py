"""DeepSpeed's deepspeed.runtime.zero.partition_parameters namespace (zero.Init and friends,
re-exported), and what lives there: inside zero.Init, floating-point tensors that torch's
constructors make (a module's buffers, its params before they are partitioned) are created
in the config's dtype on this rank's device, as in DeepSpeed, so a model built for bf16
never exists whole in fp32.

Transformers replaces this module's `zero_wrapper_for_fp_tensor_constructor` for
torch.arange (so RoPE buffers keep their dtype); Init looks the wrapper up here each time it
patches the constructors, and the `deepspeed` compat package's module of this name is this
module itself, so that replacement takes effect.
"""

from __future__ import annotations

import contextlib
import sys

import torch

from deepspeed_ext.accelerator import get_accelerator

from .init_context import GatheredParameters, Init, register_external_parameter, unregister_external_parameter
from .partitioned_params import ZeroParamStatus

__all__ = ["GatheredParameters", "Init", "ZeroParamStatus", "constructors_in", "get_accelerator",
           "register_external_parameter", "unregister_external_parameter", "zero_wrapper_for_fp_tensor_constructor"]

_orig_torch_empty = torch.empty
_orig_torch_zeros = torch.zeros
_orig_torch_ones = torch.ones
_orig_torch_full = torch.full
_orig_torch_arange = torch.arange
_orig_torch_tensor = torch.tensor

ORIGINALS = {"empty": _orig_torch_empty, "zeros": _orig_torch_zeros, "ones": _orig_torch_ones,
             "full": _orig_torch_full, "arange": _orig_torch_arange, "tensor": _orig_torch_tensor}


def zero_wrapper_for_fp_tensor_constructor(fn, target_fp_dtype: torch.dtype, target_device: torch.device):
    """fn (a torch constructor) creating on target_device unless given a device, and casting
    a floating-point result to target_fp_dtype."""
    def wrapped(*args, **kwargs):
        if kwargs.get("device") is None:
            kwargs["device"] = target_device
        tensor = fn(*args, **kwargs)
        if tensor.is_floating_point() and tensor.dtype != target_fp_dtype:
            tensor = tensor.to(target_fp_dtype)
        return tensor
    return wrapped


@contextlib.contextmanager
def constructors_in(dtype: torch.dtype, device: torch.device):
    """torch.empty / zeros / ones / full / arange / tensor patched for the block."""
    wrapper = sys.modules[__name__].zero_wrapper_for_fp_tensor_constructor  # as it is now (see above)
    for name, original in ORIGINALS.items():
        setattr(torch, name, wrapper(original, target_fp_dtype=dtype, target_device=device))
    try:
        yield
    finally:
        for name, original in ORIGINALS.items():
            setattr(torch, name, original)
