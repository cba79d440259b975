"""Reading params.yaml (plain dicts, as DVC writes them with `dvc exp run -S a.b=c`) and
checking a section against the dataclass of the code that reads it, before any work."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path

import yaml

from pipeline.core.errors import PipelineError, quoted


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found: run stages from the repository root (dvc repro does)")
    try:
        with open(path, encoding="utf-8") as f:
            params = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(params, dict):
        raise PipelineError(f"{path} must be a mapping of sections (world:, train:, ...)")
    return params


def section(params: dict, name: str) -> dict:
    if name not in params:
        raise PipelineError(f"params.yaml has no section {name!r}")
    if not isinstance(params[name], dict):
        raise PipelineError(f"params.yaml: {name} must be a mapping, not {quoted(params[name])}")
    return params[name]


T = typing.TypeVar("T")


def typed(cls: type[T], values: dict, where: str, complete: bool = True) -> T:
    """`cls(**values)` with every value checked against the field's annotation: unknown keys,
    missing keys (params.yaml holds every knob; `complete=False` lets the dataclass fill them),
    wrong types ("fast" for a float) and failed `check()`s are errors that name `where.key`.
    A float written by hand as `1e-4` (PyYAML reads a string, DVC a float) is a float."""
    if not isinstance(values, dict):
        raise PipelineError(f"params.yaml: {where} must be a mapping, not {quoted(values)}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(map(str, set(values) - set(fields)))
    if unknown:
        raise PipelineError(f"params.yaml: unknown key {where}.{unknown[0]}; valid keys of {where}: {', '.join(fields)}")
    coerced = {k: _coerce(f"{where}.{k}", v, hints[k]) for k, v in values.items()}
    missing = [f for f in fields if f not in values]
    if complete and missing:
        raise PipelineError(f"params.yaml: {where}.{missing[0]} is missing; every key of {where} must be set "
                            f"({', '.join(fields)}; docs/params.md)")
    obj = cls(**coerced)
    check = getattr(obj, "check", None)
    if check:
        check()
    return obj


def _coerce(name: str, value, kind):
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _coerce(name, value, option)
            except PipelineError:
                pass
        raise PipelineError(f"params.yaml: {name} must be {' or '.join(_kind_name(a) for a in args)}, not {quoted(value)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise PipelineError(f"params.yaml: {name} must be a list, not {quoted(value)}")
        return [_coerce(f"{name}[{i}]", v, args[0] if args else typing.Any) for i, v in enumerate(value)]
    if kind is typing.Any or origin is dict or kind is dict:
        return value
    if kind is type(None):
        if value is None:
            return None
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number):
            return float(number)
    elif kind is str:
        if isinstance(value, str):
            return value
    raise PipelineError(f"params.yaml: {name} must be {_kind_name(kind)}, not {quoted(value)}")


def _kind_name(kind) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(kind, getattr(kind, "__name__", str(kind)))


def at_least(name: str, value, low) -> None:
    """A range check with a message that says what the param is for."""
    if value < low:
        raise PipelineError(f"params.yaml: {name} must be at least {low}, not {value!r}")


def below(name: str, value, high) -> None:
    if value >= high:
        raise PipelineError(f"params.yaml: {name} must be below {high}, not {value!r}")


def lookup(params: dict, key: str):
    """A param by its dotted name: `lincir.noise_scale`."""
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise PipelineError(f"params.yaml has no {key}")
        node = node[part]
    return node


def value(params: dict, key: str, kind: type, low=None):
    """One param by its dotted name, typed like `typed` does, and at least `low`."""
    out = _coerce(key, lookup(params, key), kind)
    if low is not None:
        at_least(key, out, low)
    return out
