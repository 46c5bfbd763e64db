"""Transformers' models built inside zero.Init get the initial weights they get without ZeRO-3.

Transformers builds a ZeRO-3 model inside its `no_init_weights` (torch's init functions and
`PreTrainedModel.init_weights` made no-ops) and initializes it once afterwards, gathering one
module at a time on rank 0. The random numbers are then drawn in another order than in a
plain build, where construction draws and each nested model's `post_init` initializes its
part as soon as it is built: same seed, other weights. Inside zero.Init this module puts the
plain order back: construction draws as usual, and `init_weights` at each `post_init` runs
Transformers' own gathered initialization, which marks what it initialized, so the pass
Transformers makes afterwards finds nothing left to do.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import sys

import torch

from deepspeed_ext.version import COMPAT_LABEL

# torch's init functions as they are when deepspeed_ext is imported, before any no_init_weights
_TORCH_INIT_FUNCTIONS = {name: fn for name, fn in vars(torch.nn.init).items()
                         if name.endswith("_") and not name.startswith("_") and callable(fn)}


def _gathered_init_weights():
    """An init_weights for PreTrainedModel that initializes partitioned params (None when the
    installed Transformers has no gathered initialization, or when its `import deepspeed`
    would not reach deepspeed_ext: it gathers through deepspeed.zero)."""
    integration = sys.modules.get("transformers.integrations.deepspeed")
    initialize = getattr(integration, "initialize_weights_zero3", None)
    try:
        ours = COMPAT_LABEL in importlib.metadata.version("deepspeed")
    except importlib.metadata.PackageNotFoundError:
        ours = False
    if initialize is None or not ours:
        return None

    def init_weights(model) -> None:
        initialize(model)
        model.tie_weights(recompute_mapping=False)
    return init_weights


@contextlib.contextmanager
def plain_initialization_order():
    """For the block: torch's real init functions, and (when Transformers is loaded) a
    post_init that initializes as it would without ZeRO-3."""
    saved = {name: getattr(torch.nn.init, name) for name in _TORCH_INIT_FUNCTIONS}
    modeling = sys.modules.get("transformers.modeling_utils")
    pretrained = getattr(modeling, "PreTrainedModel", None)
    init_weights = _gathered_init_weights() if pretrained is not None else None
    saved_init_weights = vars(pretrained).get("init_weights") if init_weights else None
    for name, fn in _TORCH_INIT_FUNCTIONS.items():
        setattr(torch.nn.init, name, fn)
    if init_weights:
        pretrained.init_weights = init_weights
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)
        if init_weights:
            pretrained.init_weights = saved_init_weights
