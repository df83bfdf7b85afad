"""What one ``attnsift serve`` process accepts, and how it queues work: :class:`ServeLimits`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ServeLimits:
    """Request limits and the micro-batching settings of a server (every field positive).

    Attributes
    ----------
    max_documents : int
        Documents per ``/v1/rerank`` request (more: 400).
    max_document_chars : int
        Characters per document (more: 400).
    max_query_chars : int
        Characters per query (more: 400).
    max_body_bytes : int
        Request body size, checked before the body is parsed (more: 413).
    max_first_stage_k : int
        The largest ``first_stage_k`` and ``top_n`` a ``/v1/search`` request may ask for (more: 400).
    max_batch : int
        Requests the worker runs on the model in one go.
    batch_wait_ms : float
        How long the worker waits for more requests after the first of a batch (0: take what is queued).
    queue_size : int
        Requests waiting for the model; one more is answered 503 with ``Retry-After``.
    timeout_s : float
        Seconds a request may wait and run in all; then 504 (a batch already on the model still finishes).
    retry_after_s : int
        The ``Retry-After`` seconds of a 503.
    grace_s : float
        On shutdown, how long requests already accepted may take to finish before the server stops.
    """

    max_documents: int = 1000
    max_document_chars: int = 20_000
    max_query_chars: int = 2_000
    max_body_bytes: int = 8 * 1024 * 1024
    max_first_stage_k: int = 1000
    max_batch: int = 8
    batch_wait_ms: float = 2.0
    queue_size: int = 64
    timeout_s: float = 60.0
    retry_after_s: int = 1
    grace_s: float = 30.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            number = (int,) if f.type in ("int", int) else (int, float)
            if isinstance(value, bool) or not isinstance(value, number):
                kind = "an integer" if number == (int,) else "a number"
                raise TypeError(f"ServeLimits.{f.name} must be {kind}, got {value!r}")
            if value < 0 or (value == 0 and f.name != "batch_wait_ms"):
                raise ValueError(f"ServeLimits.{f.name} must be positive, got {value!r}")
