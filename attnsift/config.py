"""Typed configuration from loose options (CLI ``--option key=value``, spec strings, kwargs).

Every retriever and reranker keeps its options in a frozen dataclass, and every entry point (Python
keyword arguments, the CLI, bench specs) builds it with :func:`config_from_options`, so all of them go
through the same checks:

* an unknown key is an error that lists the accepted ones;
* a string is converted to the field's type (``"0.9"`` -> 0.9, ``"true"`` -> True, ``"1,2"`` -> a
  tuple, ``"none"`` -> None), and an impossible conversion says what was expected (``Literal`` fields:
  "expected one of ...");
* the class's own checks run last: a config that derives from :class:`Config` checks its field types
  and then calls :meth:`Config.validate` from ``__post_init__`` (so a config built directly is checked
  too); that is where contradictory options are rejected, in one place per component.

Components take ``config=`` or keyword options, not both (:func:`resolve_config`). Device and dtype
are not options: model-backed components take ``device=`` and ``dtype=`` arguments, resolved by
:func:`resolve_device` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) and :func:`resolve_dtype`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null", ""}
_DTYPES = {"float32": "float32", "fp32": "float32", "float": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "half": "float16"}


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


# ------------------------------------------------------------------------------ types and conversion
def describe(annotation: Any) -> str:
    """A field type in words, for error messages (``Literal['a', 'b'] | None`` -> "one of 'a', 'b' or none")."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (typing.Union, types.UnionType):
        parts = [describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or none" if type(None) in args else "")
    if origin in (list, tuple) or annotation in (list, tuple):
        item = args[0] if args else Any
        return "a comma-separated list" + ("" if item is Any else f" (each {describe(item)})")
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}
    if annotation in words:
        return words[annotation]
    if annotation is Any or annotation is None:
        return "any value"
    return f"a {getattr(annotation, '__name__', annotation)}"


def _expected(key: str, value: Any, annotation: Any) -> Exception:
    """A string that does not parse is a ValueError; a Python value of the wrong type a TypeError."""
    kind = ValueError if isinstance(value, str) else TypeError
    return kind(f"option {key}={value!r}: expected {describe(annotation)}")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` (often a string) to ``annotation``; raise ValueError naming ``key`` when impossible."""
    if annotation is Any or annotation is None:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except (TypeError, ValueError):
                continue
        raise _expected(key, value, annotation)
    if origin is typing.Literal:
        for arg in args:
            if value == arg and type(value) is type(arg):
                return arg
        for arg in args:  # "2" for Literal[1, 2]
            if isinstance(value, str) and not isinstance(arg, str) and value.strip() == str(arg):
                return arg
        raise _expected(key, value, annotation)
    if origin in (list, tuple) or annotation in (list, tuple):
        if isinstance(value, str):
            text = value.strip()
            try:
                value = json.loads(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
            except json.JSONDecodeError:
                raise _expected(key, value, annotation) from None
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
            raise _expected(key, value, annotation)
        item_t = args[0] if args else Any
        items = [_coerce(v.strip() if isinstance(v, str) else v, item_t, key) for v in value]
        return tuple(items) if (origin is tuple or annotation is tuple) else items
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _expected(key, value, annotation)
    if annotation in (int, float):
        if isinstance(value, bool):
            raise _expected(key, value, annotation)
        if annotation is int and isinstance(value, float):
            if not value.is_integer():
                raise _expected(key, value, annotation)
            return int(value)
        try:
            return annotation(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise _expected(key, value, annotation) from None
    if annotation is str:
        if not isinstance(value, str):
            raise _expected(key, value, annotation)
        return value
    if annotation is Path and isinstance(value, str):
        return Path(value)
    return value


def _matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` already has type ``annotation`` (no conversion)."""
    if annotation is Any or annotation is None:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(value is None if a is type(None) else _matches(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (list, tuple) or annotation in (list, tuple):
        container = origin or annotation
        if not isinstance(value, container):
            return False
        if not args or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
            return all(_matches(v, args[0]) for v in value) if args else True
        if origin is tuple:
            return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args))
        return all(_matches(v, args[0]) for v in value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


# ------------------------------------------------------------------------------------- configs
class Config:
    """Base of attnsift's frozen configuration dataclasses.

    Subclass it with ``@dataclass(frozen=True)``. After ``__init__`` every field's type is checked
    (an int given for a float field becomes a float; anything else of the wrong type is a TypeError
    naming the field), then :meth:`validate` runs: override it to reject values out of range and
    contradictory combinations, with messages that list the accepted values.
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value, annotation = getattr(self, f.name), hints.get(f.name, Any)
            if not _matches(value, annotation):
                raise TypeError(
                    f"{type(self).__name__}.{f.name} must be {describe(annotation)}, got {value!r} "
                    f"({type(value).__name__}); build configs from strings with config_from_options"
                )
            if isinstance(value, int) and not isinstance(value, bool) and float in _plain_types(annotation) \
                    and int not in _plain_types(annotation):
                object.__setattr__(self, f.name, float(value))
        self.validate()

    def validate(self) -> None:
        """Reject out-of-range values and contradictory options (ValueError); the base accepts all."""

    @classmethod
    def from_options(cls: type[T], options: Mapping[str, Any] | None = None, **more: Any) -> T:
        """``config_from_options(cls, options, **more)``."""
        return config_from_options(cls, options, **more)

    def with_options(self: T, options: Mapping[str, Any] | None = None, **more: Any) -> T:
        """A copy with ``options`` (strings allowed) replacing fields, checked like a new config."""
        return config_from_options(type(self), options, base=self, **more)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (tuples kept)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def _plain_types(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def config_from_options(cls: type[T], options: Mapping[str, Any] | None = None, *, base: Any = None,
                        **more: Any) -> T:
    """Build the frozen dataclass ``cls`` from ``options`` (strings allowed), rejecting unknown keys.

    Parameters
    ----------
    cls : dataclass type
        The configuration class.
    options : mapping, optional
        ``field -> value``; strings are converted to the field's type.
    base : cls instance, optional
        Fields not in ``options`` are taken from it (default: the class defaults).
    **more
        More options (they win over ``options``).

    Returns
    -------
    cls
        The checked configuration: :class:`Config` subclasses run their type checks and
        :meth:`Config.validate`; any other class with a ``validate()`` method has it called.

    Raises
    ------
    ValueError
        An unknown key (the message lists the accepted ones), a value that cannot be converted (the
        message says what was expected), or a rejected combination.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"config_from_options needs a dataclass type, got {cls!r}")
    if base is not None and not isinstance(base, cls):
        raise TypeError(f"base must be a {cls.__name__}, got {type(base).__name__}")
    merged = {**(options or {}), **more}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(merged) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; accepted: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(v, hints.get(k, Any), k) for k, v in merged.items()}
    if base is not None:
        kwargs = {**{k: getattr(base, k) for k in fields}, **kwargs}
    out = cls(**kwargs)
    if not isinstance(out, Config) and callable(getattr(out, "validate", None)):
        out.validate()
    return out


def resolve_config(cls: type[T], config: T | None, options: Mapping[str, Any] | None, owner: str = "") -> T:
    """The configuration of a component that takes ``config=`` or keyword ``options``, not both.

    Parameters
    ----------
    cls : dataclass type
        The component's configuration class.
    config : cls instance or None
        A ready configuration.
    options : mapping or None
        Loose options, converted by :func:`config_from_options`.
    owner : str
        The component's name, for messages.
    """
    who = owner or cls.__name__
    if config is not None:
        if options:
            raise ValueError(
                f"{who} got config= and options ({', '.join(sorted(options))}); give one of them "
                "(config.with_options(...) combines them)"
            )
        if not isinstance(config, cls):
            raise TypeError(f"{who} takes config={cls.__name__}(...), got {type(config).__name__}")
        return config
    return config_from_options(cls, options)


# ------------------------------------------------------------------------------ device and dtype
#: the device names every ``device=`` and ``--device`` accepts, in words (for messages)
DEVICE_NAMES = "'auto' (CUDA when available, else the CPU), 'cpu', 'cuda' or 'cuda:N'"


def resolve_device(device: Any = None) -> Any:
    """A ``torch.device``: ``device`` checked, or CUDA when available, else the CPU.

    Parameters
    ----------
    device : str, torch.device or None
        ``"auto"`` or None (CUDA when torch sees a CUDA device, else the CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` (or any other name torch knows, e.g. ``"mps"``), or a ``torch.device``.

    Raises
    ------
    ValueError
        A name torch does not know, or a CUDA device this machine lacks (CUDA absent, or index N out
        of range), before any model is loaded.
    """
    import torch

    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; expected {DEVICE_NAMES}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device here; use device='cpu' "
                             "or 'auto'")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {device!r} asked for, but this machine has {count} CUDA device(s) "
                             f"(cuda:0..cuda:{count - 1}); use one of those, 'cpu' or 'auto'")
    return dev


def resolve_dtype(dtype: Any = None, device: Any = "cpu", accelerator_default: str = "bfloat16") -> Any:
    """A ``torch.dtype``: ``dtype`` checked, or float32 on the CPU and ``accelerator_default`` elsewhere.

    Parameters
    ----------
    dtype : torch.dtype, str or None
        ``"float32"``, ``"bfloat16"``, ``"float16"`` (or ``fp32``, ``bf16``, ``fp16``, ``half``).
    device : str, torch.device or None
        Where the model runs (decides the default; ``auto`` and None are resolved first).
    accelerator_default : str
        The default off the CPU (language models: bfloat16; encoders keep float32).
    """
    import torch

    if dtype is None:
        if device is None or str(device).strip().lower() == "auto":
            device = resolve_device(device)
        dtype = "float32" if str(device).startswith("cpu") else accelerator_default
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype {dtype} is not a floating-point type; expected one of float32, bfloat16, float16")
        return dtype
    name = _DTYPES.get(str(dtype).strip().lower()) if isinstance(dtype, str) else None
    if name is None:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of float32, bfloat16, float16 (or a torch.dtype)")
    return getattr(torch, name)


def check_finite(owner: str, **values: float) -> None:
    """Raise ValueError if any of ``values`` is NaN or infinite (``owner`` names the config)."""
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{owner}.{name} must be a finite number, got {value!r}")
