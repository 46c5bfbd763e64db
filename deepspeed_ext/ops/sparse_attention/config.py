"""The `sparse_attention` section of the DeepSpeed config (DeepSpeed's keys) as a SparsityConfig:

    "sparse_attention": {"mode": "fixed", "block": 16, "different_layout_per_head": true,
                         "num_local_blocks": 4, "num_global_blocks": 1, "attention": "bidirectional"}

    sparsity_config = sparsity_config_from(engine._config.sparse_attention, num_heads=12)
"""

from __future__ import annotations

import inspect

from deepspeed_ext.runtime.config_schema import ConfigError

from .sparsity_config import (
    BigBirdSparsityConfig,
    BSLongformerSparsityConfig,
    DenseSparsityConfig,
    FixedSparsityConfig,
    LocalSlidingWindowSparsityConfig,
    SparsityConfig,
    VariableSparsityConfig,
)

MODES: dict[str, type[SparsityConfig]] = {
    "dense": DenseSparsityConfig, "fixed": FixedSparsityConfig, "variable": VariableSparsityConfig,
    "bigbird": BigBirdSparsityConfig, "bslongformer": BSLongformerSparsityConfig,
    "local": LocalSlidingWindowSparsityConfig,
}


def _keys(cls: type[SparsityConfig]) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self", "num_heads"}


def sparsity_config_from(section: dict, num_heads: int) -> SparsityConfig:
    """The config object the section describes; a key the mode does not take is an error
    naming it (DeepSpeed ignores keys of other modes; so do we, when they belong to one)."""
    section = dict(section)
    mode = section.pop("mode", "fixed")
    if mode not in MODES:
        raise ConfigError(f"sparse_attention.mode must be one of {sorted(MODES)}, got {mode!r}")
    cls = MODES[mode]
    known_anywhere = set().union(*(_keys(c) for c in MODES.values()))
    unknown = sorted(set(section) - known_anywhere)
    if unknown:
        raise ConfigError(f"sparse_attention has unknown keys {unknown}")
    arguments = {key: value for key, value in section.items() if key in _keys(cls)}
    try:
        return cls(num_heads, **arguments)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"sparse_attention ({mode}): {error}") from None
