"""Picklable recipes: what a worker process needs to build its own copy of a reranker or an encoder.

An engine that runs past one process (:class:`attnsift.engines.ray.RayEngine`) cannot ship a loaded
model to its workers: each builds its own, once, from a recipe (the registry name, the model, the
options, the device and the precision), so a worker on another machine loads from its own disk or
cache. A recipe is small, frozen and picklable, and :meth:`RerankerRecipe.build` goes through
:func:`attnsift.registry.build_reranker`, the same path the CLI takes, so a worker's reranker is the
reranker the local run would build.

A :class:`RerankerRecipe` is also a reranker in its own right (lazy): ``rerank`` builds the model on
first use. That lets a pipeline name its reranker without loading it in the driver, which on a
cluster may have no GPU::

    recipe = RerankerRecipe("icr", "smollm2-135m", {"max_words": 100})
    Pipeline(bm25, recipe, depth=20).run(queries, engine=RayEngine(num_gpus_per_worker=1))
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["RerankerRecipe", "EncoderRecipe", "recipe_of"]


def _plain(value: Any) -> Any:
    """An option value as a hashable, picklable plain value (lists and dicts become tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _plain(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    return value


def _device_name(device: Any) -> str | None:
    if device is None:
        return None
    text = str(device).strip().lower()
    return None if text == "auto" else text


def _dtype_name(dtype: Any) -> str | None:
    return None if dtype is None else str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class RerankerRecipe:
    """How to build a reranker: ``build_reranker(kind, model, options, device, dtype)``.

    Parameters
    ----------
    kind : str
        A name of :data:`attnsift.registry.RERANKERS` (``icr``, ``blockrank``, ``listwise``,
        ``cross-encoder``, ``none``).
    model : str, optional
        The model (an alias such as ``smollm2-135m``, a folder, a hub id); default: the registry's.
        A folder must exist at the same path on every worker.
    options : mapping, optional
        The reranker's config fields (strings allowed), as ``--option`` gives them.
    device : str, optional
        Where each worker runs the model (``cpu``, ``cuda``, ``cuda:N``); None or ``auto``: the
        worker's own default (CUDA when that worker has a GPU, else the CPU).
    dtype : str, optional
        ``float32``, ``bfloat16``, ``float16``; None: float32 on the CPU, bfloat16 on CUDA.

    Raises
    ------
    ValueError
        An unknown ``kind`` (the message lists the known ones).
    TypeError
        Options that are not a mapping.
    """

    kind: str
    model: str | None = None
    options: tuple[tuple[str, Any], ...] | Mapping[str, Any] = ()
    device: str | None = None
    dtype: str | None = None
    _built: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from attnsift.registry import RERANKERS

        if self.kind not in RERANKERS:
            raise ValueError(f"unknown reranker {self.kind!r}; choose one of: {', '.join(sorted(RERANKERS))}")
        opts = self.options
        if not isinstance(opts, (Mapping, tuple)):
            raise TypeError(f"options must be a mapping of config fields, got {type(opts).__name__}")
        items = opts.items() if isinstance(opts, Mapping) else opts
        object.__setattr__(self, "options", tuple(sorted((str(k), _plain(v)) for k, v in items)))
        object.__setattr__(self, "model", None if self.model is None else str(self.model))
        object.__setattr__(self, "device", _device_name(self.device))
        object.__setattr__(self, "dtype", _dtype_name(self.dtype))

    # The built model never travels: a worker builds its own.
    def __getstate__(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "_built"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_built", None)

    @property
    def option_dict(self) -> dict[str, Any]:
        """The options as a dict (what ``build_reranker`` takes)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.options}

    def check(self) -> None:
        """Check the model name and the options without loading anything (raises ValueError)."""
        from attnsift.registry import check_model, check_options

        check_model("reranker", self.kind, self.model)
        check_options("reranker", self.kind, self.option_dict)

    def build(self) -> Any:
        """A new reranker built from this recipe (loads the model)."""
        from attnsift.registry import build_reranker

        return build_reranker(self.kind, model=self.model, options=self.option_dict,
                              device=None if self.kind == "none" else self.device, dtype=self.dtype)

    # ------------------------------------------------------------------ a lazy reranker
    @property
    def reranker(self) -> Any:
        """This recipe's reranker in this process, built on first use and kept."""
        if self._built is None:
            object.__setattr__(self, "_built", self.build())
        return self._built

    @property
    def name(self) -> str:
        """The reranker's name (its runs' TREC tag), read from its class without building it."""
        from attnsift.registry import RERANKERS, _resolve

        return str(getattr(_resolve(RERANKERS[self.kind]), "name", self.kind))

    @property
    def needs_text(self) -> bool:
        return self.kind != "none"

    @property
    def config(self) -> Any:
        """The reranker's config, checked from the options without loading the model (None for ``none``)."""
        if self.kind == "none":
            return None
        from attnsift.config import config_from_options
        from attnsift.registry import RERANKERS, _resolve

        return config_from_options(_resolve(RERANKERS[self.kind]).config_class, self.option_dict)

    def rerank(self, ranking: Any, k: int | None = None) -> Any:
        """Rerank in this process (the model is built on the first call)."""
        return self.reranker.rerank(ranking, k)

    def rerank_detailed(self, ranking: Any, k: int | None = None) -> Any:
        return self.reranker.rerank_detailed(ranking, k)

    def truncation_run(self) -> Any:
        return self.reranker.truncation_run()

    @property
    def truncation(self) -> dict[str, Any] | None:
        return None if self._built is None else getattr(self._built, "truncation", None)


def _non_default_options(config: Any) -> dict[str, Any]:
    if config is None or not dataclasses.is_dataclass(config):
        return {}
    out = {}
    for f in dataclasses.fields(config):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        value = getattr(config, f.name)
        if default is dataclasses.MISSING or value != default:
            out[f.name] = value
    return out


def recipe_of(reranker: Any) -> RerankerRecipe:
    """The recipe that rebuilds ``reranker`` in another process.

    A :class:`RerankerRecipe` is returned as it is; an object with a ``recipe`` attribute gives that, one
    with a ``built_with`` dict (``name``, ``model``, ``options``, ``device``, ``dtype``) the recipe of it; a
    reranker of the registry built from a model *name* (``ICRReranker("smollm2-135m", ...)``, what
    the CLI and :func:`attnsift.registry.build_reranker` build) gives its class's registry name, its
    ``model_name``, the config fields that differ from their defaults, and its precision when that is
    not its device's default; the device is left to each worker (CUDA where it has one).

    Raises
    ------
    TypeError
        A reranker the registry does not know, or one given a loaded model object (a worker cannot
        load that): build it by name, or pass a :class:`RerankerRecipe`.
    """
    if isinstance(reranker, RerankerRecipe):
        return reranker
    given = getattr(reranker, "recipe", None)
    if isinstance(given, RerankerRecipe):
        return given
    built = getattr(reranker, "built_with", None)  # what build_reranker was called with, when it records it
    if isinstance(built, dict) and {"name", "model", "options"} <= set(built):
        return RerankerRecipe(built["name"], built["model"], built["options"] or {}, built.get("device"),
                              built.get("dtype"))
    from attnsift.registry import RERANKERS

    cls = type(reranker)
    target = f"{cls.__module__}:{cls.__qualname__}"
    kind = next((k for k, v in RERANKERS.items() if v == target), None)
    if kind is None:
        raise TypeError(f"{cls.__name__} is not a reranker of the registry ({', '.join(sorted(RERANKERS))}); an engine "
                        "rebuilds the reranker in each worker from a recipe: pass a RerankerRecipe")
    if kind == "none":
        return RerankerRecipe("none")
    model = getattr(reranker, "model_name", None)
    if not model or not _loadable_by_name(kind, str(model)):
        raise TypeError(f"this {kind} reranker was given a loaded model ({model or 'unnamed'}), which a worker process "
                        "cannot rebuild; build it by name (a model alias, folder or hub id) or pass "
                        f"RerankerRecipe({kind!r}, model=..., options=...)")
    dtype = None
    try:
        param = next(reranker.model.parameters())
        default = "float32" if param.device.type == "cpu" else "bfloat16"
        dtype = None if str(param.dtype).replace("torch.", "") == default else str(param.dtype)
    except (AttributeError, StopIteration, TypeError):
        pass
    return RerankerRecipe(kind, str(model), _non_default_options(getattr(reranker, "config", None)), None, dtype)


def _loadable_by_name(kind: str, model: str) -> bool:
    try:
        from attnsift.registry import check_model

        check_model("reranker", kind, model)
        return True
    except (ValueError, TypeError):
        return False


@dataclass(frozen=True)
class EncoderRecipe:
    """How to build a document encoder in a worker: ``Encoder(model, device=, dtype=, **options)``.

    ``model`` is the location the driver's encoder loaded (a folder or hub id; ``minilm``'s bundled
    folder), so the vectors a worker computes are the driver's.
    """

    model: str
    options: tuple[tuple[str, Any], ...] = ()
    device: str | None = None
    dtype: str | None = None

    @classmethod
    def of(cls, encoder: Any, device: Any = None) -> "EncoderRecipe":
        """The recipe of a built :class:`attnsift.retrieval.encoders.Encoder` (its options, its precision;
        the device is each worker's own unless given)."""
        cfg = getattr(encoder, "encoder_config", None)
        opts = _non_default_options(cfg)
        dtype = _dtype_name(getattr(encoder, "dtype", None))
        from attnsift.retrieval.encoders import MINILM_ALIASES

        label = str(getattr(encoder, "label", ""))
        model = label if label.lower() in MINILM_ALIASES else str(encoder.location)  # an alias resolves per worker
        return cls(model, tuple(sorted((k, _plain(v)) for k, v in opts.items())),
                   _device_name(device), None if dtype == "float32" else dtype)

    def build(self) -> Any:
        from attnsift.retrieval.encoders import Encoder

        return Encoder(self.model, device=self.device, dtype=self.dtype, **dict(self.options))
