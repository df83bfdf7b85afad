"""Bounded load test of ``attnsift serve`` on loopback: latency percentiles, throughput, batch sizes,
zero 5xx, nothing lost, and clients that drop their connection mid-request.

For each scenario the script starts ``attnsift serve`` as a subprocess on 127.0.0.1 (an ephemeral
port), sends ``--requests`` distinct requests from ``--concurrency`` concurrent clients (bounded by
``--max-seconds``: no new request starts after it), and meanwhile ``--drops`` extra clients that give
up after ``--drop-after`` seconds and close their connection. Then it reads ``/metrics``, stops the
server with SIGTERM (graceful drain) and checks that it exits 0.

Scenarios (queries: SciFact's 300 test queries, then NFCorpus's, each request distinct so ICR's mass
cache never answers):

    icr    --reranker icr (smollm2-135m, max_words small) over a BM25 index: half the requests are
           POST /v1/search (BM25 top `depth` -> ICR), half POST /v1/rerank with `depth` BM25 documents of
           ranks depth+1..2*depth (the Cohere-shaped endpoint)
    bm25   --reranker none over the same index: POST /v1/search only (BM25 only)

Usage::

    ATTNSIFT_DATA=../shared/data .venv/bin/python benchmarks/serve_load.py --index /work/scratch/F/scifact-bm25 \\
        --scenarios bm25,icr --requests 500 --concurrency 16 --json benchmarks/results/serve.json

(Build the index first: ``attnsift index --dataset scifact --out DIR``.)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def launcher() -> list[str]:
    """``attnsift`` when its CLI has ``serve``; else the app with cli/serve.py imported (before it is registered)."""
    exe = shutil.which("attnsift") or str(Path(sys.executable).with_name("attnsift"))
    if Path(exe).exists():
        r = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True)
        if r.returncode == 0:
            return [exe]
    return [sys.executable, "-c", "import attnsift.cli.main, attnsift.cli.serve; from attnsift.cli.app import app; app()"]


def start_server(args: list[str], log_path: Path, timeout_s: float = 600) -> tuple[subprocess.Popen, str, float]:
    cmd = [*launcher(), "--quiet", "serve", "--host", "127.0.0.1", "--port", "0", *args]
    log = open(log_path, "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not line or not line[0].strip():
        proc.kill()
        raise RuntimeError(f"the server did not start: {' '.join(cmd)}\n{log_path.read_text()[-2000:]}")
    return proc, json.loads(line[0])["url"], time.perf_counter() - t0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


async def drive(url: str, requests: list[tuple[str, dict]], concurrency: int, max_seconds: float, drops: int,
                drop_after: float, drop_requests: list[tuple[str, dict]]) -> dict:
    import httpx

    results: list[dict | None] = [None] * len(requests)
    next_i = 0
    t0 = time.perf_counter()
    deadline = t0 + max_seconds
    dropped = Counter()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_i
        while next_i < len(requests) and time.perf_counter() < deadline:
            i = next_i
            next_i += 1
            if every and i % every == every // 2 and len(drop_tasks) < min(drops, len(drop_requests)):
                drop_tasks.append(asyncio.ensure_future(drop_one(*drop_requests[len(drop_tasks)])))
            path, body = requests[i]
            t = time.perf_counter()
            try:
                r = await client.post(path, json=body)
                out = {"path": path, "status": r.status_code, "seconds": time.perf_counter() - t}
                if r.status_code == 200:
                    data = r.json()
                    out["batch_size"] = data["meta"]["attnsift"]["batch_size"]
                    out["results"] = len(data["results"])
                    if "documents" in body:  # rerank: every document ranked (cut to top_n)
                        want = min(body.get("top_n") or len(body["documents"]), len(body["documents"]))
                        out["complete"] = out["results"] == want
                    else:  # search: at most top_n, each with an id and a score (none: BM25 matched nothing)
                        out["complete"] = out["results"] <= body["top_n"] and all(
                            "doc_id" in x and "relevance_score" in x for x in data["results"])
                        out["empty"] = not data["results"]
            except Exception as exc:  # noqa: BLE001 - recorded: a lost request
                out = {"path": path, "status": None, "error": repr(exc), "seconds": time.perf_counter() - t}
            results[i] = out

    host, port = url.removeprefix("http://").rsplit(":", 1)
    drop_tasks: list[asyncio.Task] = []

    async def drop_one(path: str, body: dict) -> None:
        # A whole request on a raw connection, then the client closes it after drop_after seconds
        # (unless the answer came first): the server has the request in hand when the client goes.
        raw = json.dumps(body).encode()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
        await writer.drain()
        try:
            first = await asyncio.wait_for(reader.read(12), drop_after)
            dropped["answered before the drop: " + first.decode(errors="replace")[9:12]] += 1
        except asyncio.TimeoutError:
            dropped["closed before the answer"] += 1
        writer.close()

    every = max(len(requests) // max(drops, 1), 1) if drops else 0

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(900.0), limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        await asyncio.gather(*drop_tasks)
    wall = time.perf_counter() - t0
    return {"results": [r for r in results if r is not None], "not_started": sum(r is None for r in results),
            "wall_seconds": wall, "drops": dict(dropped)}


def read_metrics(url: str) -> dict[str, float]:
    import httpx

    from attnsift.serve.metrics import parse

    return parse(httpx.get(url + "/metrics", timeout=60).text)


def batch_histogram(m: dict[str, float]) -> dict[str, int]:
    """Batches per size range, from the cumulative buckets of attnsift_batch_size."""
    out, prev, lo = {}, 0.0, 1
    for le in ("1", "2", "4", "8", "16", "32", "64", "128", "+Inf"):
        n = m.get(f'attnsift_batch_size_bucket{{le="{le}"}}', prev)
        if n > prev:
            out[str(lo) if le == str(lo) else f"{lo}-{le}"] = int(n - prev)
        prev = n
        lo = int(le) + 1 if le != "+Inf" else lo
    return out


def summarize(name: str, run: dict, metrics: dict[str, float], startup: float, cpu: float, exit_code: int,
              stop_seconds: float, requested: int) -> dict:
    res = run["results"]
    ok = [r for r in res if r["status"] == 200]
    lat = [r["seconds"] for r in ok]
    statuses = Counter(str(r["status"]) for r in res)
    per_path = {}
    for path in sorted({r["path"] for r in ok}):
        xs = [r["seconds"] for r in ok if r["path"] == path]
        per_path[path] = {"n": len(xs), "p50": percentile(xs, 50), "p95": percentile(xs, 95), "p99": percentile(xs, 99)}
    sizes = Counter(r["batch_size"] for r in ok)
    requests_total = {k.split("{", 1)[1].rstrip("}"): int(v) for k, v in metrics.items()
                      if k.startswith("attnsift_requests_total")}
    five_xx = sum(n for s, n in statuses.items() if s.startswith("5")) + sum(
        n for k, n in requests_total.items() if 'status="5' in k)
    return {
        "scenario": name, "requested": requested, "sent": len(res), "not_started_before_deadline": run["not_started"],
        "statuses": dict(statuses), "lost": sum(r["status"] is None for r in res),
        "incomplete_answers": sum(not r.get("complete", False) for r in ok), "server_5xx": five_xx,
        "empty_search_answers": sum(bool(r.get("empty")) for r in ok),
        "wall_seconds": round(run["wall_seconds"], 2), "throughput_rps": round(len(ok) / run["wall_seconds"], 3),
        "latency_s": {"p50": percentile(lat, 50), "p95": percentile(lat, 95), "p99": percentile(lat, 99),
                      "mean": statistics.fmean(lat) if lat else None, "max": max(lat) if lat else None},
        "latency_by_path_s": per_path,
        "batch_size_seen_by_requests": {str(k): v for k, v in sorted(sizes.items())},
        "batches_by_size_from_metrics": batch_histogram(metrics),
        "batches": int(metrics.get("attnsift_batch_size_count", 0)),
        "mean_batch_size": round(metrics.get("attnsift_batch_size_sum", 0) / max(metrics.get("attnsift_batch_size_count", 1), 1), 3),
        "server_requests_total": requests_total, "drops": run["drops"],
        "server_cpu_seconds_during_load": round(cpu, 2), "server_startup_seconds": round(startup, 1),
        "sigterm_exit_code": exit_code, "sigterm_stop_seconds": round(stop_seconds, 2),
    }


def scenario_requests(name: str, queries: list[str], index, n: int, depth: int) -> list[tuple[str, dict]]:
    from attnsift.types import Query

    out: list[tuple[str, dict]] = []
    for i in range(n):
        q = queries[i % len(queries)]
        if name == "bm25":
            out.append(("/v1/search", {"query": q, "top_n": 10, "return_documents": False}))
        elif i % 2 == 0:
            out.append(("/v1/search", {"query": q, "top_n": depth, "return_documents": False}))
        else:
            ranking = index.retrieve(Query(f"q{i}", q), 2 * depth)
            docs = [c.document.text for c in ranking.candidates[depth:2 * depth]] or [c.document.text for c in ranking]
            out.append(("/v1/rerank", {"query": q, "documents": docs, "top_n": depth}))
    return out


def threads_check(index, queries: list[str], n: int, depth: int, max_words: int) -> list[dict]:
    """ICR over BM25's top ``depth`` for ``n`` distinct queries in this process, alternating torch's
    thread count 1 and 2 (side by side, so both see the same load on a shared CPU)."""
    import torch

    from attnsift.pipeline import Pipeline
    from attnsift.registry import build_reranker

    pipe = Pipeline(index, build_reranker("icr", "smollm2-135m", {"max_words": max_words}), first_stage_k=depth,
                    depth=depth, k=depth)
    pipe("warm up")
    out = []
    for i, q in enumerate(queries[-n:]):
        threads = 1 + i % 2
        torch.set_num_threads(threads)
        t = time.perf_counter()
        pipe(q)
        out.append({"threads": threads, "seconds": round(time.perf_counter() - t, 3), "loadavg": os.getloadavg()[0]})
    torch.set_num_threads(os.cpu_count() or 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, help="A BM25 index (attnsift index --dataset scifact --out DIR).")
    ap.add_argument("--scenarios", default="bm25,icr")
    ap.add_argument("--requests", type=int, default=500, help="Requests per scenario (bm25).")
    ap.add_argument("--icr-requests", type=int, default=None, help="Requests of the icr scenario (default --requests).")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-seconds", type=float, default=480.0, help="No new request after this (per scenario).")
    ap.add_argument("--depth", type=int, default=3, help="icr: documents per request.")
    ap.add_argument("--max-words", type=int, default=30, help="icr: words kept per document.")
    ap.add_argument("--threads", type=int, default=None, help="icr: the server's --threads.")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=600.0, help="The server's --timeout.")
    ap.add_argument("--drops", type=int, default=20, help="Extra clients that give up mid-request.")
    ap.add_argument("--drop-after", type=float, default=None, help="Seconds before a dropping client gives up "
                                                                   "(default: 0.002 for bm25, 0.5 for icr).")
    ap.add_argument("--logs", default="/tmp", help="Folder for the servers' stderr.")
    ap.add_argument("--threads-check", type=int, default=0,
                    help="Also time ICR in this process for N queries, torch threads 1 and 2 alternating.")
    ap.add_argument("--json", dest="json_out", default=None)
    a = ap.parse_args()

    from attnsift.eval.datasets import load_dataset
    from attnsift.registry import load_index

    queries = [q.text for name in ("scifact", "nfcorpus") for q in load_dataset(name).queries.values()]
    index = load_index(a.index, progress=False)
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": platform.platform(),
              "cpus": os.cpu_count(), "loadavg_before": os.getloadavg(), "scenarios": []}
    for name in [s.strip() for s in a.scenarios.split(",") if s.strip()]:
        n = a.requests if name == "bm25" or a.icr_requests is None else a.icr_requests
        if name == "bm25":
            args = ["--reranker", "none", "--index", a.index]
        elif name == "icr":
            args = ["--reranker", "icr", "--model", "smollm2-135m", "--index", a.index, "--depth", str(a.depth),
                    "--first-stage-k", str(a.depth), "--option", f"max_words={a.max_words}"]
            if a.threads is not None:
                args += ["--threads", str(a.threads)]
        else:
            raise SystemExit(f"unknown scenario {name!r}; choose bm25 or icr")
        args += ["--max-batch", str(a.max_batch), "--queue-size", str(4 * a.concurrency + a.drops),
                 "--timeout", str(a.timeout)]
        reqs = scenario_requests(name, queries, index, n + a.drops, a.depth)
        reqs, drop_reqs = reqs[:n], reqs[n:]  # the dropped requests are distinct too
        drop_after = a.drop_after if a.drop_after is not None else (0.002 if name == "bm25" else 0.5)
        proc, url, startup = start_server(args, Path(a.logs) / f"serve_load_{name}.log")
        print(f"{name}: serving at {url} (started in {startup:.1f} s); {len(reqs)} requests", file=sys.stderr)
        load_before = os.getloadavg()
        cpu0 = cpu_seconds(proc.pid)
        run = asyncio.run(drive(url, reqs, a.concurrency, a.max_seconds, a.drops, drop_after, drop_reqs))
        time.sleep(0.5)  # let the server record the dropped clients
        cpu = cpu_seconds(proc.pid) - cpu0
        metrics = read_metrics(url)
        t = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
        summary = summarize(name, run, metrics, startup, cpu, code, time.perf_counter() - t, len(reqs))
        summary["server_args"] = args
        summary["drop_after_s"] = drop_after
        summary["loadavg_during"] = [load_before, os.getloadavg()]
        report["scenarios"].append(summary)
        print(json.dumps(summary, indent=1), file=sys.stderr)
    if a.threads_check:
        runs = threads_check(index, queries, a.threads_check, a.depth, a.max_words)
        report["threads_check"] = {"runs": runs, "median_seconds": {
            str(t): statistics.median(r["seconds"] for r in runs if r["threads"] == t) for t in (1, 2)}}
        print(json.dumps(report["threads_check"]), file=sys.stderr)
    report["loadavg_after"] = os.getloadavg()
    text = json.dumps(report, indent=1)
    if a.json_out:
        Path(a.json_out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
