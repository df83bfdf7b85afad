"""Typed configuration from loose options (CLI ``--option key=value``, spec strings, kwargs).

Configurations are frozen dataclasses; :func:`config_from_options` builds one from a mapping, rejecting
unknown keys and converting strings to the field's type, so every entry point (Python, CLI, bench
specs) goes through the same checks.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Iterable, Mapping, TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_option_strings(items: Iterable[str] | None) -> dict[str, str]:
    """``["a=1", "b=x"] -> {"a": "1", "b": "x"}``; a malformed item is a ValueError."""
    out: dict[str, str] = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"option {item!r} is not of the form key=value (e.g. --option calibration=none)")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise ValueError(f"option {item!r} has an empty key")
        out[key] = value.strip()
    return out


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` (often a string) to ``annotation``; raise ValueError naming ``key`` when impossible."""
    if annotation is Any or annotation is None:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError(f"option {key}={value!r}: expected {annotation}; " + "; ".join(errors))
    if origin is typing.Literal:
        if value in args:
            return value
        raise ValueError(f"option {key}={value!r}: expected one of {', '.join(map(repr, args))}")
    if origin in (list, tuple) or annotation in (list, tuple):
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                value = json.loads(text)
            else:
                value = [v for v in text.split(",") if v.strip()]
        item_t = args[0] if args else Any
        items = [_coerce(v, item_t, key) for v in value]
        return tuple(items) if (origin is tuple or annotation is tuple) else items
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError(f"option {key}={value!r}: expected true or false")
    if annotation is int:
        if isinstance(value, bool):
            raise ValueError(f"option {key}={value!r}: expected an integer")
        if isinstance(value, int):
            return value
        try:
            return int(str(value))
        except ValueError:
            raise ValueError(f"option {key}={value!r}: expected an integer") from None
    if annotation is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"option {key}={value!r}: expected a number") from None
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"option {key}={value!r}: expected a string")
        return value
    return value


def config_from_options(cls: type[T], options: Mapping[str, Any] | None = None, **more: Any) -> T:
    """Build the frozen dataclass ``cls`` from ``options`` (strings allowed), rejecting unknown keys."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    merged = {**(options or {}), **more}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(merged) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; accepted: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(v, hints.get(k, Any), k) for k, v in merged.items()}
    return cls(**kwargs)
