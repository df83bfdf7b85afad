"""``attnsift serve``: the rerank and search HTTP server (FastAPI + uvicorn, extra ``serve``).

Registers on :data:`attnsift.cli.app.app` when imported (``cli/main.py`` imports it). Only typer is
imported at module level; FastAPI, uvicorn and the models load when the command runs.
"""
from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from attnsift.cli.app import app
from attnsift.cli.common import check_device, guard, warn

ENCODED_INDEXES = ("dense", "late", "hybrid")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
@guard
def serve(
    reranker: str = typer.Option("icr", "--reranker", help="icr | listwise | blockrank | cross-encoder | none (none: first-stage order; with --index, a BM25-only search server)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="The reranker's model (default smollm2-135m; cross-encoder: required)."),
    index_dir: Optional[Path] = typer.Option(None, "--index", help="A saved index (`attnsift index`) for POST /v1/search."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface; then give --api-key)."),
    port: int = typer.Option(8000, "--port", help="Port (0: any free port; the URL is printed)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="ATTNSIFT_API_KEY", show_envvar=True,
                                          help="Require 'Authorization: Bearer KEY' (all but /health and the OpenAPI page)."),
    max_batch: int = typer.Option(8, "--max-batch", help="Requests run on the model in one batch."),
    batch_wait_ms: float = typer.Option(2.0, "--batch-wait-ms", help="How long a batch waits for more requests after its first."),
    queue_size: int = typer.Option(64, "--queue-size", help="Requests that may wait for the model; beyond: 503 with Retry-After."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds a request may wait and run; beyond: 504."),
    grace: float = typer.Option(30.0, "--grace", help="On shutdown, seconds the requests in flight get to finish."),
    max_documents: int = typer.Option(1000, "--max-documents", help="Documents per rerank request."),
    max_document_chars: int = typer.Option(20_000, "--max-document-chars", help="Characters per document."),
    max_query_chars: int = typer.Option(2_000, "--max-query-chars", help="Characters per query."),
    max_body_bytes: int = typer.Option(8 * 1024 * 1024, "--max-body-bytes", help="Request body size (beyond: 413)."),
    option: Optional[List[str]] = typer.Option(None, "--option", metavar="KEY=VALUE", help="Reranker option (repeatable), e.g. max_words=100."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N for the models (default auto: CUDA when available)."),
    depth: Optional[int] = typer.Option(None, "--depth", help="Search: candidates the reranker rescores (default: min(20, --first-stage-k))."),
    first_stage_k: int = typer.Option(100, "--first-stage-k", help="Search: candidates from the index when a request gives no first_stage_k."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Query encoder of a dense / late / hybrid index (default: the index's)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads for the model (default: torch's, one per core; on a CPU shared with other work 1 is often much faster)."),
    warmup: bool = typer.Option(True, "--warmup/--no-warmup", help="Rerank a tiny request before listening (the first real one is not slower)."),
    access_log: bool = typer.Option(False, "--access-log", help="One log line per request on stderr."),
) -> None:
    """Serve a reranker (and an index) over HTTP: POST /v1/rerank, /v1/search; GET /health, /metrics, /docs."""
    from attnsift import progress
    from attnsift.config import parse_option_strings
    from attnsift.registry import build_reranker, check_model, check_options, index_kind, load_index
    from attnsift.types import check_k

    # Cheap checks first (names, options, numbers, device, the index's kind), then the index, then the model.
    try:
        from attnsift.serve.limits import ServeLimits
    except ImportError as exc:  # pragma: no cover - the module itself has no third-party imports
        raise ImportError("attnsift serve needs FastAPI and uvicorn: pip install 'attnsift[serve]'") from exc
    options = parse_option_strings(option)
    check_options("reranker", reranker, options)
    check_model("reranker", reranker, model)
    reranked = reranker != "none"
    check_k(first_stage_k, "--first-stage-k")
    if depth is not None:
        if not reranked:
            raise ValueError("--depth is how many candidates a reranker rescores; with --reranker none drop it")
        check_k(depth, "--depth")
        if depth > first_stage_k:
            raise ValueError(f"--depth ({depth}) is larger than --first-stage-k ({first_stage_k}); lower --depth or "
                             "raise --first-stage-k")
    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port} is not a port; give 0-65535 (0: any free port)")
    if api_key is not None and not api_key.strip():
        raise ValueError("--api-key (or ATTNSIFT_API_KEY) is empty; give a key or leave it unset for no authentication")
    for flag, value in (("--max-batch", max_batch), ("--queue-size", queue_size), ("--timeout", timeout),
                        ("--grace", grace), ("--max-documents", max_documents),
                        ("--max-document-chars", max_document_chars), ("--max-query-chars", max_query_chars),
                        ("--max-body-bytes", max_body_bytes)):
        if value <= 0:
            raise ValueError(f"{flag} must be positive, got {value:g}")
    if batch_wait_ms < 0:
        raise ValueError(f"--batch-wait-ms must be 0 or more, got {batch_wait_ms:g}")
    limits = ServeLimits(max_documents=max_documents, max_document_chars=max_document_chars,
                         max_query_chars=max_query_chars, max_body_bytes=max_body_bytes, max_batch=max_batch,
                         batch_wait_ms=batch_wait_ms, queue_size=queue_size, timeout_s=timeout, grace_s=grace)
    if threads is not None:
        check_k(threads, "--threads")
    device = check_device(device)
    kind = index_kind(index_dir) if index_dir is not None else None
    if kind is not None:
        check_model("retriever", kind if kind != "bm25-lucene" else "bm25", encoder)
    elif encoder is not None:
        raise ValueError("--encoder is the query encoder of an --index; give --index or drop --encoder")
    from attnsift.serve.app import create_app, rerank_ranking
    from attnsift.serve.runner import serve as run_server

    if not _loopback(host) and api_key is None:
        warn(f"listening on {host} without --api-key: anyone who can reach this port can use the server")
    progress.quiet_third_party()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)  # worker threads inherit it
    stage = None
    if index_dir is not None:
        stage = load_index(index_dir, encoder=encoder, device=device if kind in ENCODED_INDEXES else None)
    with progress.step(f"loading {reranker} ({model or 'default model'})"):
        rr = build_reranker(reranker, model, options, device=device if reranked else None)
    if warmup and reranked:
        with progress.step("warming up the reranker"):
            rr.rerank(rerank_ranking("warm up", ["A short document.", "Another short document."]))
    served = create_app(rr, index=stage, index_name=str(index_dir) if index_dir is not None else None,
                        first_stage_k=first_stage_k, depth=(depth or min(20, first_stage_k)) if reranked else None,
                        model_name=model, limits=limits, api_key=api_key)

    def ready(url: str) -> None:
        typer.echo(json.dumps({"url": url, "reranker": reranker, "model": served.state.attnsift.model_name,
                               "index": str(index_dir) if index_dir is not None else None,
                               "docs": f"{url}/docs"}))
        sys.stdout.flush()

    run_server(served, host=host, port=port, access_log=access_log, on_ready=ready)
