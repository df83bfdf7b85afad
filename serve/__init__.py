"""`attnsift serve`: a rerank and search HTTP server over Pipeline (FastAPI + uvicorn, extra ``serve``).

::

    from attnsift.serve import ServeLimits, create_app, serve
    app = create_app(reranker, index="my-index", limits=ServeLimits(max_batch=8), api_key="...")
    serve(app, host="127.0.0.1", port=8000)

Names load lazily: importing this package does not import FastAPI.
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "create_app": "attnsift.serve.app",
    "rerank_ranking": "attnsift.serve.app",
    "ServeLimits": "attnsift.serve.limits",
    "make_server": "attnsift.serve.runner",
    "serve": "attnsift.serve.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'attnsift.serve' has no attribute {name!r}")
