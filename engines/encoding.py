"""Corpus encoding on an engine: the document chunks of a dense index encoded by Ray workers.

:func:`engine_encoder` wraps a built :class:`~attnsift.retrieval.encoders.Encoder` so that the
document chunks of a planned corpus are encoded on the engine's actors while everything else (the
queries, the probe vector, the index manifest, the encoding cache) stays as it is. The index build
(``DenseRetriever.from_corpus`` through :func:`attnsift.registry.build_index`) does not change: it asks
the encoder for one chunk of 512 documents after another (:func:`~attnsift.retrieval.encoding_cache.
encode_corpus_cached`); the first request starts the encoding of that chunk and every later one of the
plan on the engine, and each request then takes its chunk's vectors as they arrive. A worker encodes
a chunk with the same code and the same chunking as the local build, so the vectors, the cache files
and the index are those of a local build (on the same device and precision), and a stopped build
resumes from the cached chunks like a local one.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any, Iterator, Sequence

log = logging.getLogger(__name__)

__all__ = ["engine_encoder", "CHUNK"]

#: documents per chunk of the encoding cache (``encode_corpus_cached``'s default)
CHUNK = 512


def _key(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def engine_encoder(encoder: Any, engine: Any, texts: Sequence[str], *, device: Any = None,
                   chunk_size: int = CHUNK) -> Any:
    """``encoder`` (an Encoder) with the document chunks of ``texts`` encoded on ``engine``.

    Parameters
    ----------
    encoder : Encoder
        Built here: it encodes the queries and the probe, and its recipe travels to the workers.
    engine : RayEngine
        Anything with ``encode_stream(encoder, chunks, want, device)``.
    texts : sequence of str
        The documents' ``contents`` in corpus order, as the index build will ask for them.
    device : str, optional
        Where the workers run the encoder (default: each worker's own).

    Returns
    -------
    Encoder
        A subclass instance sharing ``encoder``'s state; texts outside the plan are encoded here.
    """
    from attnsift.retrieval.encoders import Encoder

    if not isinstance(encoder, Encoder):
        raise TypeError(f"engine_encoder needs an attnsift Encoder, got {type(encoder).__name__}")

    class EngineEncoder(type(encoder)):  # type: ignore[misc, valid-type]
        """The wrapped encoder: planned document chunks on the engine, the rest here."""

        def _encode(self, batch: Sequence[str], is_query: bool, want: str, progress: bool | None) -> Any:
            plan = self.__dict__.get("_plan")
            if is_query or plan is None:
                return super()._encode(batch, is_query, want, progress)
            at = plan["index"].get(_key(batch))
            if at is None or at < plan["next"]:
                return super()._encode(batch, is_query, want, progress)
            return _take(plan, at, want, self)

    out = EngineEncoder.__new__(EngineEncoder)
    out.__dict__.update(encoder.__dict__)
    chunks = [list(texts[s:s + chunk_size]) for s in range(0, len(texts), chunk_size)]
    out.__dict__["_plan"] = {"engine": engine, "chunks": chunks, "index": {_key(c): i for i, c in enumerate(chunks)},
                             "next": 0, "stream": None, "want": None, "device": device, "base": encoder,
                             "buffer": {}}
    return out


def _take(plan: dict, at: int, want: str, owner: Any) -> Any:
    """The encoding of chunk ``at``: from the running stream, or a new stream from ``at`` onward (the
    first request, or a request behind the stream)."""
    if plan["stream"] is None or plan["want"] != want or at < plan["started"]:
        plan["stream"] = _stream(plan, at, want)
        plan["want"], plan["started"], plan["buffer"] = want, at, {}
    buffer = plan["buffer"]
    while at not in buffer:
        try:
            i, result = next(plan["stream"])
        except StopIteration:
            raise RuntimeError(f"the engine stopped before chunk {at} of the corpus; rerun (encodings resume)") from None
        if i >= at:  # a chunk the build skipped (cached) is dropped
            buffer[i] = result
    plan["next"] = at + 1
    return buffer.pop(at)


def _stream(plan: dict, start: int, want: str) -> Iterator[tuple[int, Any]]:
    """``(chunk index, result)`` for the plan's chunks from ``start`` on, in order."""
    log.info("encoding chunks %d..%d of the corpus on %s", start, len(plan["chunks"]) - 1, plan["engine"])
    for i, result in plan["engine"].encode_stream(plan["base"], plan["chunks"][start:], want, plan["device"]):
        yield start + i, result
