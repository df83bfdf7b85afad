"""Sharing one model between threads and an event loop.

A reranker holds one model; several threads (a server's request handlers, ``asyncio.to_thread`` calls)
must take turns on it. :func:`shared_lock` gives every object one lock, created on first use and kept in
the instance dict, so siblings made by copying that dict (``with_options``) share it as they share the
model. :func:`in_thread` runs a blocking call in a worker thread under such a lock, so the event loop is
never blocked.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_LOCK_ATTR = "_attnsift_model_lock"
_create = threading.Lock()


def shared_lock(obj: Any) -> threading.Lock:
    """The lock of ``obj``'s model (one per object and the siblings that share its instance dict)."""
    found = getattr(obj, "__dict__", {}).get(_LOCK_ATTR)
    if found is not None:
        return found
    with _create:
        found = obj.__dict__.get(_LOCK_ATTR)
        if found is None:
            found = threading.Lock()
            obj.__dict__[_LOCK_ATTR] = found
        return found


async def in_thread(lock: threading.Lock | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a worker thread (holding ``lock`` while it runs); awaits its result."""

    def call() -> T:
        if lock is None:
            return fn(*args, **kwargs)
        with lock:
            return fn(*args, **kwargs)

    return await asyncio.to_thread(call)


def resolve_threads(n_threads: Any) -> int:
    """A ``n_threads`` argument checked and resolved: a positive int as given, -1 as one per CPU; anything
    else a one-line ValueError (shared by the retrievers' ``retrieve_batch``)."""
    if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads == 0 or n_threads < -1:
        raise ValueError(f"n_threads must be a positive integer or -1 (one per CPU), got {n_threads!r}")
    if n_threads == -1:
        import os

        return os.cpu_count() or 1
    return n_threads
