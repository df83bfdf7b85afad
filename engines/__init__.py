"""Engines that run a Pipeline's reranking (and a dense index's encoding) past one process.

- :class:`LocalEngine`: this process, what a pipeline does without an engine;
- :class:`~attnsift.engines.ray.RayEngine`: a pool of Ray actors, one model each, on this machine or
  a cluster (``pip install 'attnsift[ray]'``; imported when first used).

``Pipeline.run(queries, engine=...)`` takes any object with the methods of :class:`Engine`; workers
build their models from a :class:`RerankerRecipe` (:func:`recipe_of` makes one from a reranker).
"""
from __future__ import annotations

from typing import Any

from attnsift.engines.base import ENGINES, Engine, EngineResult, LocalEngine, merge_truncation
from attnsift.engines.recipe import EncoderRecipe, RerankerRecipe, recipe_of

__all__ = ["Engine", "EngineResult", "LocalEngine", "RayEngine", "RerankerRecipe", "EncoderRecipe", "recipe_of",
           "make_engine", "merge_truncation", "ENGINES"]


def __getattr__(name: str) -> Any:
    if name == "RayEngine":  # Ray is imported only when the engine is asked for
        from attnsift.engines.ray import RayEngine

        return RayEngine
    raise AttributeError(f"module 'attnsift.engines' has no attribute {name!r}")


def make_engine(name: str | None = "local", address: str | None = None, **options: Any) -> Any:
    """The engine called ``name``: ``local`` (:class:`LocalEngine`) or ``ray``
    (:class:`~attnsift.engines.ray.RayEngine` with ``address`` and ``options``).

    Checks the name, and that Ray is installed, before any work; Ray itself starts (or connects)
    when the engine first runs.

    Raises
    ------
    ValueError
        An unknown engine, or an address (or Ray options) with the local engine.
    ImportError
        ``ray`` without the Ray extra (``pip install 'attnsift[ray]'``).
    """
    name = (name or "local").strip().lower()
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")
    if name == "local":
        if address is not None:
            raise ValueError("--ray-address is for --engine ray; add --engine ray or drop --ray-address")
        if options:
            raise ValueError(f"the local engine takes no options (got {', '.join(sorted(options))})")
        return LocalEngine()
    from attnsift.engines.ray import RayEngine, require_ray

    require_ray()
    return RayEngine(address=address, **options)
