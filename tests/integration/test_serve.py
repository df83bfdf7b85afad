"""``attnsift serve`` against real httpx clients and a real uvicorn on 127.0.0.1 (an ephemeral port).

Endpoints, every bad request, authentication, the bounded queue (503), the timeout (504), graceful
shutdown, dropped clients, micro-batching and the answers equal to ``reranker.rerank`` / ``Pipeline``.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from attnsift.pipeline import Pipeline  # noqa: E402
from attnsift.rerank.base import BaseReranker, IdentityReranker  # noqa: E402
from attnsift.serve.app import create_app, rerank_ranking, validation_message  # noqa: E402
from attnsift.serve.limits import ServeLimits  # noqa: E402
from attnsift.serve.metrics import parse  # noqa: E402
from attnsift.serve.runner import make_server  # noqa: E402
from attnsift.types import Document, Query  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DOCS = ["Vitamin C deficiency causes scurvy in sailors.", "Granite is an igneous rock.",
        "Lemons and limes contain ascorbic acid, which prevents scurvy.", "Stars fuse hydrogen into helium."]


class Overlap(BaseReranker):
    """Query-word overlap (plus a length tie-breaker): changes the request order, deterministically."""

    name = "overlap"

    def score(self, ranking):
        q = set(ranking.query.text.lower().split())
        return [len(q & set(c.document.text.lower().replace(",", " ").split())) + len(c.document.text) / 1000
                for c in ranking.candidates]


class Slow(BaseReranker):
    """Keeps the order; sleeps ``delay`` per request and records the queries it ran, in order."""

    name = "slow"
    needs_text = False

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls: list[str] = []

    def score(self, ranking):
        self.calls.append(ranking.query.text)
        time.sleep(self.delay)
        return [c.score for c in ranking.candidates]


@contextlib.contextmanager
def running(app):
    """``app`` under uvicorn in a thread on 127.0.0.1:<free port>; yields the server (``server.url``)."""
    server = make_server(app, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (server.started and server.url):
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive()


async def _gather(url: str, bodies: list[dict], path: str = "/v1/rerank", headers=None) -> list:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await asyncio.gather(*(client.post(path, json=b, headers=headers) for b in bodies))


def _wait(predicate, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


@pytest.fixture(scope="module")
def tiny_index():
    from attnsift.registry import build_retriever

    docs = [Document(f"d{i}", t, title=f"t{i}") for i, t in enumerate(DOCS)]
    return build_retriever("bm25", docs, progress=False)


# ------------------------------------------------------------------------------------------ answers
def test_rerank_equals_reranker_rerank_on_both_paths():
    from helpers import tiny_icr

    rr = tiny_icr(max_words=20)
    app = create_app(rr, model_name="tiny")
    with running(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        body = {"model": "rerank-english-v3.0", "query": "what prevents scurvy?",
                "documents": [DOCS[0], {"text": DOCS[1], "title": "ignored"}, DOCS[2], DOCS[3]],
                "rank_fields": ["text"]}
        a = client.post("/v1/rerank", json=body)
        b = client.post("/rerank", json={**body, "top_n": 2, "return_documents": True})
        c = client.post("/v2/rerank", json={"model": "rerank-v3.5", "query": "what prevents scurvy?", "documents": DOCS})
    assert a.status_code == 200 and b.status_code == 200, (a.text, b.text)
    assert c.json()["results"] == a.json()["results"]
    want = rr.rerank(rerank_ranking("what prevents scurvy?", DOCS))
    got = a.json()
    assert got["model"] == "tiny" and got["id"]
    assert [r["index"] for r in got["results"]] == [int(c.doc_id) for c in want]
    assert [r["relevance_score"] for r in got["results"]] == pytest.approx([c.score for c in want], rel=1e-6)
    assert all("document" not in r for r in got["results"])
    top2 = b.json()["results"]
    assert [r["index"] for r in top2] == [int(c.doc_id) for c in want][:2]
    assert [r["document"]["text"] for r in top2] == [DOCS[r["index"]] for r in top2]
    assert b.json()["meta"]["billed_units"] == {"search_units": 1}


def test_search_equals_pipeline_and_404_without_index(tiny_index):
    rr = Overlap()
    app = create_app(rr, index=tiny_index, first_stage_k=4, depth=3)
    with running(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post("/v1/search", json={"query": "what prevents scurvy", "top_n": 3})
        bare = client.post("/v1/search", json={"query": "scurvy", "top_n": 1, "return_documents": False})
        wide = client.post("/v1/search", json={"query": "vitamin granite lemons stars", "top_n": 9})
        bad = client.post("/v1/search", json={"query": "scurvy", "top_n": 5, "first_stage_k": 2})
    assert r.status_code == 200, r.text
    want = Pipeline(tiny_index, rr, first_stage_k=4, depth=3, k=3)(Query("q", "what prevents scurvy"))
    assert [x["doc_id"] for x in r.json()["results"]] == want.doc_ids
    assert [x["relevance_score"] for x in r.json()["results"]] == pytest.approx([c.score for c in want])
    assert r.json()["results"][0]["document"]["title"] == want.candidates[0].document.title
    assert "document" not in bare.json()["results"][0]
    assert wide.status_code == 200 and len(wide.json()["results"]) == 4  # first_stage_k raised to top_n
    assert bad.status_code == 400 and "first_stage_k" in bad.json()["message"]
    with running(create_app(IdentityReranker())) as server:
        none = httpx.post(server.url + "/v1/search", json={"query": "x"})
    assert none.status_code == 404 and "--index" in none.json()["message"]


def test_bm25_only_search_keeps_the_first_stage(tiny_index):
    app = create_app(IdentityReranker(), index=tiny_index, first_stage_k=10, depth=None)
    with running(app) as server:
        r = httpx.post(server.url + "/v1/search", json={"query": "scurvy sailors", "top_n": 2})
    assert r.status_code == 200
    want = Pipeline(tiny_index, first_stage_k=10, k=2)(Query("q", "scurvy sailors"))
    assert [x["doc_id"] for x in r.json()["results"]] == want.doc_ids


def test_health_metrics_and_openapi():
    app = create_app(Overlap(), limits=ServeLimits(max_batch=4))
    with running(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        health = client.get("/health")
        client.post("/v1/rerank", json={"query": "scurvy", "documents": DOCS})
        client.post("/v1/rerank", json={"query": "scurvy", "documents": []})
        metrics = client.get("/metrics")
        spec = client.get("/openapi.json")
        docs = client.get("/docs")
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["reranker"] == "overlap"
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = parse(metrics.text)
    assert m['attnsift_requests_total{endpoint="/v1/rerank",status="200"}'] == 1
    assert m['attnsift_requests_total{endpoint="/v1/rerank",status="422"}'] == 1
    assert m['attnsift_request_duration_seconds_count{endpoint="/v1/rerank"}'] == 2
    assert m['attnsift_batch_size_bucket{le="1"}'] == 1 and m["attnsift_batch_size_count"] == 1
    assert m["attnsift_queue_depth"] == 0 and "# TYPE attnsift_batch_size histogram" in metrics.text
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/v1/search", "/health", "/metrics"} <= set(paths)
    assert "top_n" in json.dumps(spec.json()["components"]["schemas"]["RerankRequest"])
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# ------------------------------------------------------------------------------------------ bad requests
def test_every_bad_request_is_a_clear_4xx(tiny_index):
    limits = ServeLimits(max_documents=3, max_document_chars=50, max_query_chars=20, max_body_bytes=2000)
    app = create_app(Overlap(), index=tiny_index, limits=limits)
    cases = [
        ({"query": "q", "documents": []}, 422, "documents: the documents list is empty"),
        ({"query": "   ", "documents": ["a"]}, 422, "query: the query is empty"),
        ({"query": 5, "documents": ["a"]}, 422, "query: Input should be a valid string"),
        ({"query": "q", "documents": ["a", 7]}, 422, "documents[1]: a document is a string or an object"),
        ({"query": "q", "documents": [{"txt": "a"}]}, 422, "documents[0]: a document object needs a 'text'"),
        ({"query": "q", "documents": "a"}, 422, "documents: Input should be a valid list"),
        ({"query": "q", "documents": ["a"], "top_n": 0}, 422, "top_n: Input should be greater than or equal to 1"),
        ({"query": "q", "documents": ["a"], "top_n": "x"}, 422, "top_n: "),
        ({"documents": ["a"]}, 422, "query: Field required"),
        ({"query": "q", "documents": ["a"] * 4}, 400, "at most 3 per request (--max-documents)"),
        ({"query": "q", "documents": ["a", "b" * 51]}, 400, "documents[1] has 51 characters"),
        ({"query": "q" * 21, "documents": ["a"]}, 400, "query has 21 characters"),
    ]
    with running(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        for body, status, text in cases:
            r = client.post("/v1/rerank", json=body)
            assert r.status_code == status, (body, r.text)
            assert text in r.json()["message"], (body, r.json())
            assert r.json()["detail"]
        broken = client.post("/v1/rerank", content=b'{"query": "q", "documents": [', headers={"content-type": "application/json"})
        missing = client.post("/v1/rerank")
        big = client.post("/v1/rerank", json={"query": "q", "documents": ["x" * 40] * 60})
        chunked = client.post("/v1/rerank", content=iter([b'{"query": "q", "documents": ["', b"x" * 3000, b'"]}']),
                              headers={"content-type": "application/json"})
        search = client.post("/v1/search", json={"query": "q", "top_n": 2000})
        alive = client.post("/v1/rerank", json={"query": "scurvy", "documents": ["a", "scurvy b"]})
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["message"]
    assert missing.status_code == 422 and "body is missing" in missing.json()["message"]
    assert big.status_code == 413 and "at most 2000 bytes (--max-body-bytes)" in big.json()["message"]
    assert chunked.status_code == 413, chunked.text
    assert search.status_code == 400 and "above this server's limit" in search.json()["message"]
    assert alive.status_code == 200 and alive.json()["results"][0]["index"] == 1


def test_validation_message_names_nested_fields():
    msg = validation_message([{"loc": ("body", "documents", 3, "text"), "msg": "Value error, bad", "type": "value_error"}])
    assert msg == "documents[3].text: bad"


def test_create_app_rejects_bad_arguments():
    with pytest.raises(TypeError, match="rerank"):
        create_app(object())
    with pytest.raises(TypeError, match="ServeLimits"):
        create_app(IdentityReranker(), limits={"max_batch": 2})
    with pytest.raises(ValueError, match="api_key"):
        create_app(IdentityReranker(), api_key=" ")
    with pytest.raises(ValueError, match="max_batch must be positive"):
        ServeLimits(max_batch=0)
    with pytest.raises(TypeError, match="queue_size must be an integer"):
        ServeLimits(queue_size=2.5)


# ------------------------------------------------------------------------------------------ authentication
def test_bearer_token_is_required_when_a_key_is_set():
    app = create_app(Overlap(), api_key="s3cret")
    body = {"query": "scurvy", "documents": DOCS[:2]}
    with running(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        none = client.post("/v1/rerank", json=body)
        wrong = client.post("/v1/rerank", json=body, headers={"Authorization": "Bearer nope"})
        basic = client.post("/v1/rerank", json=body, headers={"Authorization": "Basic czNjcmV0"})
        good = client.post("/rerank", json=body, headers={"Authorization": "Bearer s3cret"})
        health = client.get("/health")
        metrics = client.get("/metrics")
        metrics_ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        spec = client.get("/openapi.json")
    for r in (none, wrong, basic, metrics):
        assert r.status_code == 401 and "Bearer" in r.json()["message"]
        assert r.headers["www-authenticate"] == "Bearer"
    assert good.status_code == 200 and health.status_code == 200 and metrics_ok.status_code == 200
    assert spec.status_code == 200 and "HTTPBearer" in json.dumps(spec.json()["components"])


# ------------------------------------------------------------------------------------------ queue, timeout, shutdown
def test_full_queue_answers_503_with_retry_after():
    slow = Slow(1.0)
    app = create_app(slow, limits=ServeLimits(queue_size=1, max_batch=1, batch_wait_ms=0, retry_after_s=3))
    state = app.state.attnsift

    async def scenario(url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            first = asyncio.ensure_future(client.post("/v1/rerank", json={"query": "a", "documents": ["x"]}))
            while state.batcher.running == 0:  # the first is on the model
                await asyncio.sleep(0.005)
            second = asyncio.ensure_future(client.post("/v1/rerank", json={"query": "b", "documents": ["x"]}))
            while state.batcher.depth == 0:  # the second waits in the queue
                await asyncio.sleep(0.005)
            third = await client.post("/v1/rerank", json={"query": "c", "documents": ["x"]})
            return await first, await second, third

    with running(app) as server:
        first, second, third = asyncio.run(scenario(server.url))
        metrics = parse(httpx.get(server.url + "/metrics").text)
    assert first.status_code == 200 and second.status_code == 200
    assert third.status_code == 503 and third.headers["retry-after"] == "3"
    assert "--queue-size" in third.json()["message"]
    assert slow.calls == ["a", "b"]
    assert metrics['attnsift_requests_total{endpoint="/v1/rerank",status="503"}'] == 1


def test_timeout_answers_504_and_the_server_goes_on():
    slow = Slow(0.8)
    app = create_app(slow, limits=ServeLimits(timeout_s=0.2))
    with running(app) as server:
        r = httpx.post(server.url + "/v1/rerank", json={"query": "a", "documents": ["x"]}, timeout=30)
        assert r.status_code == 504 and "--timeout" in r.json()["message"]
        slow.delay = 0.0
        _wait(lambda: app.state.attnsift.batcher.idle)
        ok = httpx.post(server.url + "/v1/rerank", json={"query": "b", "documents": ["x", "y"]}, timeout=30)
    assert ok.status_code == 200 and [x["index"] for x in ok.json()["results"]] == [0, 1]


def test_graceful_shutdown_finishes_in_flight_and_refuses_new():
    slow = Slow(1.5)
    app = create_app(slow)
    server = make_server(app, port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait(lambda: server.started and server.url, 30)
    out: dict = {}

    def call():
        out["first"] = httpx.post(server.url + "/v1/rerank", json={"query": "a", "documents": ["x"]}, timeout=30)

    client = threading.Thread(target=call)
    client.start()
    _wait(lambda: app.state.attnsift.batcher.running == 1)
    server.handle_exit(signal.SIGTERM, None)  # what SIGTERM does
    refused = httpx.post(server.url + "/v1/rerank", json={"query": "b", "documents": ["x"]}, timeout=30)
    health = httpx.get(server.url + "/health", timeout=30)
    client.join(30)
    thread.join(30)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "shutting down" in refused.json()["message"]
    assert health.status_code == 503 and health.json()["status"] == "draining"
    assert out["first"].status_code == 200
    assert not thread.is_alive() and slow.calls == ["a"]


# ------------------------------------------------------------------------------------------ batching, dropped clients
def test_concurrent_requests_are_micro_batched_and_answered_each_their_own():
    slow = Slow(0.15)
    app = create_app(slow, limits=ServeLimits(max_batch=8, batch_wait_ms=20))
    bodies = [{"query": f"query {i}", "documents": [f"doc {i} {j}" for j in range(i % 3 + 1)], "return_documents": True}
              for i in range(12)]
    with running(app) as server:
        answers = asyncio.run(_gather(server.url, bodies))
        metrics = parse(httpx.get(server.url + "/metrics").text)
    assert all(a.status_code == 200 for a in answers)
    for body, a in zip(bodies, answers):  # each answer is its own request's, in its own order
        assert [r["document"]["text"] for r in a.json()["results"]] == body["documents"]
    sizes = [a.json()["meta"]["attnsift"]["batch_size"] for a in answers]
    assert max(sizes) > 1
    assert metrics["attnsift_batch_size_count"] < len(bodies)
    assert metrics["attnsift_batch_size_sum"] == len(bodies)
    assert sorted(slow.calls) == sorted(b["query"] for b in bodies)


def test_a_client_that_drops_its_request_does_not_disturb_the_others():
    slow = Slow(1.0)
    app = create_app(slow, limits=ServeLimits(max_batch=1, batch_wait_ms=0))
    state = app.state.attnsift

    async def scenario(url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            first = asyncio.ensure_future(client.post("/v1/rerank", json={"query": "keep 1", "documents": ["x"]}))
            while state.batcher.running == 0:
                await asyncio.sleep(0.005)
            async with httpx.AsyncClient(base_url=url, timeout=0.2) as impatient:
                with pytest.raises(httpx.ReadTimeout):  # it gives up while queued and closes its connection
                    await impatient.post("/v1/rerank", json={"query": "dropped", "documents": ["x"]})
            last = await client.post("/v1/rerank", json={"query": "keep 2", "documents": ["x", "y"]})
            return await first, last

    with running(app) as server:
        first, last = asyncio.run(scenario(server.url))
        _wait(lambda: state.in_flight == 0)
        metrics = parse(httpx.get(server.url + "/metrics").text)
    assert first.status_code == 200 and last.status_code == 200
    assert [r["index"] for r in last.json()["results"]] == [0, 1]
    assert slow.calls == ["keep 1", "keep 2"]  # the dropped request never reached the model
    assert metrics['attnsift_requests_total{endpoint="/v1/rerank",status="499"}'] == 1


def test_a_batch_answers_each_job_when_done_and_keeps_errors_to_their_job():
    from attnsift.serve.batching import MicroBatcher

    def job(name, seconds, fail=False):
        def run():
            time.sleep(seconds)
            if fail:
                raise ValueError(f"{name} failed")
            return name
        return run

    async def scenario():
        batcher = MicroBatcher(None, max_batch=3, batch_wait_ms=100)
        t0 = time.perf_counter()
        done = {}

        async def one(name, seconds, fail=False):
            j = await batcher.submit(job(name, seconds, fail), timeout_s=30)
            done[name] = time.perf_counter() - t0
            return j

        jobs = await asyncio.gather(one("a", 0.3), one("b", 0.3, fail=True), one("c", 0.3))
        await batcher.close(1)
        return jobs, done

    jobs, done = asyncio.run(scenario())
    assert [j.batch_size for j in jobs] == [3, 3, 3]
    assert jobs[0].future.result() == "a" and jobs[2].future.result() == "c"
    assert isinstance(jobs[1].future.exception(), ValueError)
    assert done["a"] < done["c"] - 0.4  # "a" was answered when it was done, not at the end of the batch


def test_a_reranker_error_on_one_request_is_a_400_for_it_alone():
    class Picky(Overlap):
        def score(self, ranking):
            if ranking.query.text == "boom":
                raise ValueError("cannot rank boom")
            return super().score(ranking)

    with running(create_app(Picky(), limits=ServeLimits(batch_wait_ms=50))) as server:
        bad, good = asyncio.run(_gather(server.url, [{"query": "boom", "documents": ["a"]},
                                                     {"query": "scurvy", "documents": ["a", "scurvy"]}]))
    assert bad.status_code == 400 and "cannot rank boom" in bad.json()["message"]
    assert good.status_code == 200 and good.json()["results"][0]["index"] == 1


# ------------------------------------------------------------------------------------------ the command
def _cli(*args, **kwargs):
    code = "import attnsift.cli.main, attnsift.cli.serve; from attnsift.cli.app import app; app()"
    return [sys.executable, "-c", code, *args]


def test_cli_checks_names_before_loading():
    from typer.testing import CliRunner

    import attnsift.cli.main  # noqa: F401
    import attnsift.cli.serve  # noqa: F401
    from attnsift.cli.app import app

    runner = CliRunner()
    for args, text in ((["serve", "--reranker", "nope"], "unknown reranker 'nope'"),
                       (["serve", "--reranker", "none", "--model", "x"], "takes no model"),
                       (["serve", "--max-batch", "0"], "--max-batch must be positive"),
                       (["serve", "--port", "70000"], "--port 70000"),
                       (["serve", "--reranker", "none", "--depth", "5"], "--depth"),
                       (["serve", "--model", "no-such-model-anywhere"], "no-such-model-anywhere")):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert text in r.output, (args, r.output)


def test_cli_serves_a_bm25_index_and_stops_on_sigterm(tmp_path, tiny_index):
    index = tiny_index.save(tmp_path / "idx")
    env = {**os.environ, "ATTNSIFT_API_KEY": "k3y"}
    proc = subprocess.Popen(_cli("--quiet", "serve", "--reranker", "none", "--index", str(index), "--port", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        info = json.loads(line)
        assert info["url"].startswith("http://127.0.0.1:") and info["reranker"] == "none"
        denied = httpx.post(info["url"] + "/v1/search", json={"query": "scurvy"}, timeout=30)
        r = httpx.post(info["url"] + "/v1/search", json={"query": "scurvy", "top_n": 2},
                       headers={"Authorization": "Bearer k3y"}, timeout=30)
        assert denied.status_code == 401
        assert r.status_code == 200 and r.json()["results"][0]["doc_id"] in ("d0", "d2")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, proc.stderr.read()
