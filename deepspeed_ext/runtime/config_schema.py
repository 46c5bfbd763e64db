"""A small declarative checker for the DeepSpeed config: each section is a table of keys
with a type, a default and limits. Checking a section fills in defaults and raises a
ConfigError that names the full key path (and, for a typo, the closest valid key).

No key is silently ignored: a key this project does not act on is either refused for the
values that would change what DeepSpeed does (`supported`: the values that match what
happens here), or, where it cannot change results (logging, performance tuning), listed
as `inert` in its schema and in README.md."""

from __future__ import annotations

import difflib
import inspect
import numbers
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

AUTO = "auto"  # a value of "auto" means "use the default" (what HF Trainer configs write)


class ConfigError(ValueError):
    """A DeepSpeed config value is missing, misspelled, of the wrong type or impossible."""


@dataclass(frozen=True)
class Key:
    """One config key. kind: bool, int, float, str, dict / list (free-form), or a nested Schema.
    ints accept integral floats (configs write bucket sizes as 5e8); with `infinite`, an int
    key also takes infinity (Accelerate writes steps_per_print as inf for "never")."""

    default: Any
    kind: Any
    choices: tuple = ()
    minimum: float | None = None
    aliases: tuple[str, ...] = ()
    nullable: bool = False
    infinite: bool = False
    supported: tuple | None = None  # DeepSpeed takes other values too; these are the ones acted on here


def off() -> Key:
    """A DeepSpeed switch this project does not implement: accepted only when false."""
    return Key(False, bool, supported=(False,))


@dataclass(frozen=True)
class Schema:
    keys: dict[str, Key]
    # DeepSpeed keys that cannot change results (logging, performance tuning): accepted as they are.
    inert: frozenset[str] = field(default_factory=frozenset)
    # only with `enabled` false: the other keys of a disabled feature are accepted unchecked
    open_when_disabled: bool = False


def disabled_feature() -> Key:
    """A DeepSpeed feature section this project does not implement: accepted while disabled."""
    return Key(None, Schema({"enabled": Key(False, bool, supported=(False,))}, open_when_disabled=True))


def closest(word: str, choices) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def check_section(raw: Any, schema: Schema, path: str) -> SimpleNamespace:
    """The section with every key of `schema` present, checked; `path` names it in errors."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a JSON object, got {type(raw).__name__}")
    aliases = {alias: name for name, key in schema.keys.items() for alias in key.aliases}
    values = {}
    disabled = schema.open_when_disabled and raw.get("enabled", False) in (False, AUTO)
    for given, value in raw.items():
        name = aliases.get(given, given)
        where = f"{path}.{given}" if path else given
        if name in schema.inert or (disabled and name not in schema.keys):
            continue
        if name not in schema.keys:
            raise ConfigError(f"{where}: unknown key{closest(given, list(schema.keys) + list(aliases))}; "
                              f"valid keys here: {', '.join(sorted(schema.keys))}")
        if name in values:
            raise ConfigError(f"{where}: given twice (as '{name}' and an alias of it)")
        values[name] = _check_value(value, schema.keys[name], where)
    for name, key in schema.keys.items():
        if name not in values:
            values[name] = _default(key, f"{path}.{name}" if path else name)
    return SimpleNamespace(**values)


def _default(key: Key, where: str):
    return check_section({}, key.kind, where) if isinstance(key.kind, Schema) else key.default


def _check_value(value: Any, key: Key, where: str):
    kind = key.kind
    # "auto" is the default, except for a free-form string, where it may be the value meant.
    if isinstance(value, str) and value == AUTO and (kind is not str or key.choices):
        return _default(key, where)
    if isinstance(kind, Schema):
        return check_section(value, kind, where)  # null means all defaults
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
    elif kind is list and not isinstance(value, list):
        raise ConfigError(f"{where} must be a list, got {value!r}")
    if key.choices and value not in key.choices:
        raise ConfigError(f"{where} must be one of {', '.join(map(str, key.choices))}, got {value!r}"
                          f"{closest(str(value), map(str, key.choices))}")
    if key.minimum is not None and value < key.minimum:
        raise ConfigError(f"{where} must be at least {key.minimum}, got {value!r}")
    if key.supported is not None and value not in key.supported:
        raise ConfigError(f"{where}: {value!r} is not supported by deepspeed_ext (DeepSpeed acts on it; "
                          f"here only {' or '.join(map(repr, key.supported))} is), so it is refused rather "
                          "than ignored")
    return value


def check_arguments(values: dict, function, where: str) -> None:
    """Type-check free-form parameters (optimizer.params, scheduler.params) against what the
    function they are passed to takes, judged by each parameter's default and annotation: a
    number where it takes a number (or a list of them where it also takes a sequence, as
    per-group learning rates), a bool for a flag, a list of numbers for a tuple, a string."""
    parameters = inspect.signature(function).parameters
    for name, value in values.items():
        parameter = parameters.get(name)
        if parameter is None or value is None:
            continue
        problem = _argument_problem(value, parameter)
        if problem:
            raise ConfigError(f"{where}.{name} must be {problem}, got {value!r}")


def _argument_problem(value, parameter: inspect.Parameter) -> str | None:
    default = None if parameter.default is inspect.Parameter.empty else parameter.default
    annotation = "" if parameter.annotation is inspect.Parameter.empty else str(parameter.annotation)
    sequence = isinstance(default, (tuple, list)) or "Sequence" in annotation
    numeric = (isinstance(default, numbers.Real) and not isinstance(default, bool)) or (
        default is None and ("float" in annotation or "int" in annotation) and "bool" not in annotation)
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    if not (numeric or sequence):
        return None
    if isinstance(value, (tuple, list)) and sequence:
        if any(not _is_number(v) for v in value):
            return "a list of numbers"
        if isinstance(default, (tuple, list)) and len(value) != len(default):
            return f"a list of {len(default)} numbers"
        return None
    if numeric and _is_number(value):
        return None
    return "a number or a list of numbers" if numeric and sequence else "a list of numbers" if sequence \
        else "a number"


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
