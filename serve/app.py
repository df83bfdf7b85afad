"""The FastAPI application of ``attnsift serve``: :func:`create_app`.

Endpoints::

    POST /v1/rerank   (also /v2/rerank, /rerank)   rank the request's documents for its query (hosted-rerank-API shape)
    POST /v1/search                    the loaded index's first stage, then the reranker on its top `depth`
    GET  /health                       200 {"status": "ok"}; 503 {"status": "draining"} while shutting down
    GET  /metrics                      Prometheus text format
    GET  /docs, /openapi.json          the OpenAPI page FastAPI generates

Every model call goes through one :class:`~attnsift.serve.batching.MicroBatcher`: requests queue up
(bounded: 503 with ``Retry-After`` when full), a worker runs up to ``max_batch`` of them at a time in a
worker thread holding the reranker's lock, and a request that takes longer than ``timeout_s`` is
answered 504. Errors are JSON objects with a one-line ``message`` (and FastAPI's ``detail``).
"""
from __future__ import annotations

import hmac
import logging
import math
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

try:
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError("attnsift serve needs FastAPI and uvicorn: pip install 'attnsift[serve]'") from exc

from attnsift.concurrency import shared_lock
from attnsift.serve.batching import Closed, Job, JobTimeout, MicroBatcher, QueueFull
from attnsift.serve.limits import ServeLimits
from attnsift.serve.metrics import CONTENT_TYPE, Metrics
from attnsift.serve.middleware import Guard, error_body
from attnsift.serve.schemas import (DocumentOut, Health, RerankRequest, RerankResponse, RerankResult, SearchRequest,
                                    SearchResponse, SearchResult)
from attnsift.types import Candidate, Document, Query, Ranking

log = logging.getLogger(__name__)


def rerank_ranking(query: str, texts: Sequence[str]) -> Ranking:
    """The Ranking ``/v1/rerank`` gives the reranker: the texts in request order as the first stage.

    Document ids are the positions, zero-padded (so ties keep the request order); first-stage scores
    fall by one per position.
    """
    width = len(str(max(len(texts) - 1, 0)))
    n = len(texts)
    return Ranking(Query("q", query), tuple(Candidate(f"{i:0{width}d}", float(n - i), Document(f"{i:0{width}d}", t))
                                            for i, t in enumerate(texts)))


class ServeState:
    """What the routes share: the models, the limits, the batcher, the metrics and the shutdown flag."""

    def __init__(self, reranker: Any, retriever: Any, *, limits: ServeLimits, model_name: str, index_name: str | None,
                 first_stage_k: int, depth: int | None, api_key: str | None) -> None:
        self.reranker = reranker
        self.retriever = retriever
        self.limits = limits
        self.model_name = model_name
        self.reranker_name = str(getattr(reranker, "name", type(reranker).__name__))
        self.index_name = index_name
        self.first_stage_k = first_stage_k
        self.depth = depth
        self.api_key = api_key
        self.draining = False
        self.in_flight = 0
        owner = reranker if hasattr(reranker, "__dict__") else retriever
        self.batcher = MicroBatcher(shared_lock(owner) if owner is not None else None, max_batch=limits.max_batch,
                                    queue_size=limits.queue_size, batch_wait_ms=limits.batch_wait_ms,
                                    on_batch=self._on_batch)
        self.metrics = Metrics({
            "attnsift_queue_depth": ("Requests waiting for the model.", lambda: self.batcher.depth),
            "attnsift_batch_running": ("Requests of the batch on the model now.", lambda: self.batcher.running),
            "attnsift_in_flight_requests": ("HTTP requests being answered now.", lambda: self.in_flight),
            "attnsift_draining": ("1 while the server shuts down.", lambda: int(self.draining)),
        })

    def _on_batch(self, size: int, waits: list[float]) -> None:
        self.metrics.observe_batch(size, waits)

    def begin_drain(self) -> None:
        """Refuse new requests (503); those accepted already finish."""
        self.draining = True
        self.batcher.closed = True

    @property
    def idle(self) -> bool:
        """No request is being answered."""
        return self.in_flight == 0

    async def run(self, fn: Callable[[], Any]) -> Job:
        """``fn`` through the batcher; its failures as HTTP errors."""
        retry = {"Retry-After": str(self.limits.retry_after_s)}
        try:
            job = await self.batcher.submit(fn, self.limits.timeout_s)
        except Closed:
            raise HTTPException(503, "the server is shutting down; retry later or on another replica",
                                headers=retry) from None
        except QueueFull:
            raise HTTPException(503, f"the server is busy ({self.limits.queue_size} requests queued, --queue-size); "
                                "retry after the Retry-After seconds", headers=retry) from None
        except JobTimeout:
            raise HTTPException(504, f"the request took longer than {self.limits.timeout_s:g} s (--timeout); "
                                "send fewer or shorter documents, or retry when the server is less busy") from None
        exc = job.future.exception()
        if isinstance(exc, (ValueError, TypeError)):
            raise HTTPException(400, f"{self.reranker_name} could not rank this request: {exc}")
        if exc is not None:
            log.error("a request failed", exc_info=exc)
            raise HTTPException(500, f"internal error ({type(exc).__name__}); the server log has the details")
        return job

    def meta(self, job: Job) -> dict[str, Any]:
        return {"api_version": {"version": "2"}, "billed_units": {"search_units": 1},
                "attnsift": {"reranker": self.reranker_name, "batch_size": job.batch_size,
                             "queue_seconds": round(job.queue_seconds, 6), "seconds": round(job.run_seconds, 6)}}


def _limit(message: str) -> HTTPException:
    return HTTPException(400, message)


def _check_text(field: str, text: str, limit: int, option: str) -> None:
    if len(text) > limit:
        raise _limit(f"{field} has {len(text)} characters; this server takes at most {limit} ({option})")


def _field(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out or "body"


def validation_message(errors: Sequence[dict]) -> str:
    """One line naming each bad field: ``documents[2]: a document is a string or ...``."""
    parts = []
    for e in errors[:5]:
        if e.get("type") == "json_invalid":
            where = e.get("loc", ("body", None))[-1]
            parts.append(f"the body is not valid JSON (at character {where}: {e.get('ctx', {}).get('error', '')})")
            continue
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        loc = tuple(e.get("loc", ()))
        if loc == ("body",) and e.get("type") == "missing":
            parts.append("the body is missing: send a JSON object (Content-Type: application/json)")
            continue
        parts.append(f"{_field(loc)}: {msg}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def create_app(reranker: Any, *, index: Any = None, index_name: str | None = None, first_stage_k: int = 100,
               depth: int | None = 20, model_name: str | None = None, limits: ServeLimits | None = None,
               api_key: str | None = None) -> FastAPI:
    """The FastAPI app serving ``reranker`` (and ``index`` for ``/v1/search``).

    Parameters
    ----------
    reranker : Reranker
        Any attnsift reranker (``rerank(ranking, k)``); ``IdentityReranker`` (``none``) keeps the first-stage
        order, so a BM25-only search server passes it.
    index : Retriever or path, optional
        A loaded first stage, or a saved index folder (:func:`attnsift.registry.load_index`). Without it
        ``/v1/search`` answers 404.
    index_name : str, optional
        What ``/health`` reports for the index (default: the path, or the retriever's name).
    first_stage_k, depth : int
        ``/v1/search``'s default candidates from the first stage, and how many of them the reranker
        rescores (capped at the request's ``first_stage_k``).
    model_name : str, optional
        The ``model`` the answers name (default: the reranker's ``model_name``, else its name).
    limits : ServeLimits, optional
        Request limits, queue and batch settings, timeout.
    api_key : str, optional
        When given, every endpoint but ``/health`` and the OpenAPI page needs ``Authorization: Bearer <key>``.

    Returns
    -------
    fastapi.FastAPI
        Its ``state.attnsift`` is the :class:`ServeState` (``begin_drain()`` starts a graceful shutdown).
    """
    from attnsift import __version__
    from attnsift.types import check_k

    if not hasattr(reranker, "rerank"):
        raise TypeError(f"reranker must implement rerank(ranking, k), got {type(reranker).__name__}")
    limits = ServeLimits() if limits is None else limits
    if not isinstance(limits, ServeLimits):
        raise TypeError(f"limits must be a ServeLimits, got {type(limits).__name__}")
    check_k(first_stage_k, "first_stage_k")
    if depth is not None:
        check_k(depth, "depth")
    if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
        raise ValueError("api_key is empty; give a non-empty key or None for no authentication")
    if isinstance(index, (str, Path)):
        from attnsift.registry import load_index

        index_name = index_name or str(index)
        index = load_index(index)
    elif index is not None:
        index_name = index_name or str(getattr(index, "name", None) or type(index).__name__)
    model = model_name or getattr(reranker, "model_name", None) or str(getattr(reranker, "name", "reranker"))
    state = ServeState(reranker, index, limits=limits, model_name=str(model), index_name=index_name,
                       first_stage_k=first_stage_k, depth=depth, api_key=api_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.batcher.start()
        yield
        state.begin_drain()
        await state.batcher.close(limits.grace_s)

    app = FastAPI(title="attnsift serve", version=__version__, lifespan=lifespan,
                  description="Reranking and search with attention-based rerankers. `/v1/rerank` takes the request "
                              "shape of the hosted rerank APIs (Cohere, Jina), so their clients work unchanged.")
    app.state.attnsift = state
    app.add_middleware(Guard, state=state)
    _handlers(app)
    bearer = HTTPBearer(auto_error=False, description="The server's --api-key (or ATTNSIFT_API_KEY).")

    async def authorized(creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if api_key is None:
            return
        if creds is None or not hmac.compare_digest(creds.credentials.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(authorized)] if api_key is not None else []
    _routes(app, state, guarded)
    return app


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        return JSONResponse({"message": validation_message(errors), "detail": _plain(errors)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


def _plain(errors: Sequence[dict]) -> list[dict]:
    """Pydantic's errors without the parts JSON cannot carry (exception objects in ``ctx``)."""
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in errors]


def _routes(app: FastAPI, state: ServeState, guarded: list) -> None:
    limits = state.limits

    async def rerank(req: RerankRequest) -> dict[str, Any]:
        """Rank `documents` for `query`; results best first (`index`: the position in `documents`)."""
        _check_text("query", req.query, limits.max_query_chars, "--max-query-chars")
        if len(req.documents) > limits.max_documents:
            raise _limit(f"documents holds {len(req.documents)} documents; this server takes at most "
                         f"{limits.max_documents} per request (--max-documents)")
        for i, text in enumerate(req.documents):
            _check_text(f"documents[{i}]", text, limits.max_document_chars, "--max-document-chars")
        ranking = rerank_ranking(req.query, req.documents)
        job = await state.run(lambda: state.reranker.rerank(ranking))
        ranked: Ranking = job.future.result()
        results = []
        for c in ranked.top(min(req.top_n or len(ranked), len(ranked))):
            i = int(c.doc_id)
            doc = {"text": req.documents[i]} if req.return_documents else None
            results.append({"index": i, "relevance_score": _finite(c.score), "document": doc})
        return {"id": str(uuid.uuid4()), "model": state.model_name, "results": results, "meta": state.meta(job)}

    # /v1/rerank: Cohere's v1 and Jina's path; /v2/rerank: Cohere's v2 client; /rerank: clients that use a bare path.
    for path, op in (("/v1/rerank", "rerank"), ("/v2/rerank", "rerank_v2"), ("/rerank", "rerank_unversioned")):
        app.add_api_route(path, rerank, methods=["POST"], response_model=RerankResponse,
                          response_model_exclude_none=True, dependencies=guarded, tags=["rerank"],
                          operation_id=op, summary="Rerank documents for a query")

    @app.post("/v1/search", response_model=SearchResponse, response_model_exclude_none=True, dependencies=guarded,
              tags=["search"], summary="Search the loaded index (first stage, then the reranker)")
    async def search(req: SearchRequest) -> dict[str, Any]:
        """The index's top `first_stage_k`, the reranker on the top `depth` of them, cut to `top_n`."""
        from attnsift.pipeline import Pipeline

        if state.retriever is None:
            raise HTTPException(404, "this server has no index to search: start it with --index DIR "
                                     "(or use /v1/rerank with your own documents)")
        _check_text("query", req.query, limits.max_query_chars, "--max-query-chars")
        fsk = req.first_stage_k if req.first_stage_k is not None else max(state.first_stage_k, req.top_n)
        if req.top_n > fsk:
            raise _limit(f"top_n ({req.top_n}) is larger than first_stage_k ({fsk}); raise first_stage_k or "
                         "lower top_n")
        if fsk > limits.max_first_stage_k:
            raise _limit(f"first_stage_k ({fsk}) is above this server's limit of {limits.max_first_stage_k}")
        reranker = None if state.reranker_name == "none" else state.reranker
        depth = None if reranker is None else min(state.depth or fsk, fsk)
        pipe = Pipeline(state.retriever, reranker, first_stage_k=fsk, depth=depth, k=req.top_n)
        job = await state.run(lambda: pipe(Query("q", req.query)))
        ranked: Ranking = job.future.result()
        results = []
        for c in ranked:
            doc = None
            if req.return_documents and c.document is not None:
                doc = {"text": c.document.text, "title": c.document.title}
            results.append({"doc_id": c.doc_id, "relevance_score": _finite(c.score), "document": doc})
        return {"id": str(uuid.uuid4()), "model": state.model_name, "results": results, "meta": state.meta(job)}

    @app.get("/health", response_model=Health, tags=["operations"],
             responses={503: {"description": "The server is shutting down."}})
    async def health() -> Any:
        """Liveness and readiness (no authentication)."""
        body = {"status": "draining" if state.draining else "ok", "reranker": state.reranker_name,
                "model": state.model_name, "index": state.index_name, "queue_depth": state.batcher.depth,
                "in_flight": state.in_flight}
        return JSONResponse(body, status_code=503) if state.draining else body

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=guarded, tags=["operations"])
    async def metrics() -> PlainTextResponse:
        """Prometheus text format: requests, latency, queue depth, batch sizes."""
        return PlainTextResponse(state.metrics.render(), media_type=CONTENT_TYPE)


def _finite(x: float) -> float:
    x = float(x)
    if not math.isfinite(x):
        raise HTTPException(500, "the reranker returned a score that is not a finite number")
    return x
