"""A small declarative checker for the DeepSpeed config: each section is a table of keys
with a type, a default and limits. Checking a section fills in defaults and raises a
ConfigError that names the full key path (and, for a typo, the closest valid key)."""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

AUTO = "auto"  # a value of "auto" means "use the default" (what HF Trainer configs write)


class ConfigError(ValueError):
    """A DeepSpeed config value is missing, misspelled, of the wrong type or impossible."""


@dataclass(frozen=True)
class Key:
    """One config key. kind: bool, int, float, str, dict (free-form), or a nested Schema.
    ints accept integral floats (configs write bucket sizes as 5e8); with `infinite`, an int
    key also takes infinity (Accelerate writes steps_per_print as inf for "never")."""

    default: Any
    kind: Any
    choices: tuple = ()
    minimum: float | None = None
    aliases: tuple[str, ...] = ()
    nullable: bool = False
    infinite: bool = False


@dataclass(frozen=True)
class Schema:
    keys: dict[str, Key]
    # DeepSpeed keys this project accepts but does not act on yet: a warning, not an error.
    unused: frozenset[str] = field(default_factory=frozenset)


def closest(word: str, choices) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def check_section(raw: Any, schema: Schema, path: str) -> SimpleNamespace:
    """The section with every key of `schema` present, checked; `path` names it in errors.
    Keys DeepSpeed knows that this project ignores are named in one warning."""
    ignored: list[str] = []
    section = _check_section(raw, schema, path, ignored)
    if ignored:
        warnings.warn(f"deepspeed_ext does not use these DeepSpeed config keys yet: {', '.join(ignored)}",
                      stacklevel=2)
    return section


def _check_section(raw: Any, schema: Schema, path: str, ignored: list[str]) -> SimpleNamespace:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a JSON object, got {type(raw).__name__}")
    aliases = {alias: name for name, key in schema.keys.items() for alias in key.aliases}
    values = {}
    for given, value in raw.items():
        name = aliases.get(given, given)
        where = f"{path}.{given}" if path else given
        if name in schema.unused:
            ignored.append(where)
            continue
        if name not in schema.keys:
            raise ConfigError(f"{where}: unknown key{closest(given, list(schema.keys) + list(aliases))}; "
                              f"valid keys here: {', '.join(sorted(schema.keys))}")
        if name in values:
            raise ConfigError(f"{where}: given twice (as '{name}' and an alias of it)")
        values[name] = _check_value(value, schema.keys[name], where, ignored)
    for name, key in schema.keys.items():
        if name not in values:
            values[name] = _default(key, f"{path}.{name}" if path else name)
    return SimpleNamespace(**values)


def _default(key: Key, where: str):
    return _check_section({}, key.kind, where, []) if isinstance(key.kind, Schema) else key.default


def _check_value(value: Any, key: Key, where: str, ignored: list[str]):
    kind = key.kind
    # "auto" is the default, except for a free-form string, where it may be the value meant.
    if isinstance(value, str) and value == AUTO and (kind is not str or key.choices):
        return _default(key, where)
    if isinstance(kind, Schema):
        return _check_section(value, kind, where, ignored)  # null means all defaults
    if value is None and (key.nullable or key.default is None):
        return None
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
    elif kind is int and key.infinite and value == float("inf"):
        pass
    elif kind is int:
        integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not integral:
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        value = int(value)
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        value = float(value)
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
    elif kind is dict and not isinstance(value, dict):
        raise ConfigError(f"{where} must be a JSON object, got {value!r}")
    if key.choices and value not in key.choices:
        raise ConfigError(f"{where} must be one of {', '.join(map(str, key.choices))}, got {value!r}"
                          f"{closest(str(value), map(str, key.choices))}")
    if key.minimum is not None and value < key.minimum:
        raise ConfigError(f"{where} must be at least {key.minimum}, got {value!r}")
    return value
