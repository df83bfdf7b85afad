"""BM25 at MS MARCO scale: streaming build, memory-mapped load, queries/s and the dev/small run.

Usage::

    python benchmarks/scale_bm25.py --collection /work/scratch/msmarco-full --index /work/scratch/B/bm25-full \\
        [--chunk-size 250000] [--qps-queries 1000] [--steps build load qps run] [--out benchmarks/results/scale]

``--collection`` is a folder in the official MS MARCO passage format (``collection.tsv``,
``queries.dev.small.tsv``, ``qrels.dev.small.tsv``; benchmarks/synthetic_msmarco.py writes one).
Each step runs in a fresh subprocess so its memory is its own: peak RSS is that process's
``ru_maxrss``, current RSS is ``VmRSS`` of ``/proc/self/status`` (file pages of the memory maps
that are resident count in it). Steps:

* ``build``: ``BM25Retriever.build(dataset.corpus, --index, store_text=False)`` streamed from the
  collection file (texts come from the corpus when a reranker needs them); wall time, peak RSS,
  parts, size on disk;
* ``load``: ``BM25Retriever.load(--index)`` (memory-mapped, checksums verified) and the RSS after;
* ``qps``: the first ``--qps-queries`` dev/small queries, top-1000 and top-100, one thread;
* ``run``: all dev/small queries, top-1000 each, then MRR@10 and R@1000 against the qrels; wall time
  of retrieval and of evaluation, RSS after.

Writes ``<out>.json`` (each step's figures; a rerun of some steps keeps the others). Wall times on a
shared machine depend on its load: each step also records its CPU seconds and the load average.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _dataset(collection: str):
    from attnsift.eval.datasets import load_dataset

    return load_dataset(collection, split="dev.small")


def step_build(args) -> dict:
    from attnsift.retrieval.bm25 import BM25Retriever

    ds = _dataset(args.collection)
    t0, c0 = time.perf_counter(), time.process_time()
    fp = ds.corpus.fingerprint()
    r = BM25Retriever.build(ds.corpus, args.index, chunk_size=args.chunk_size, overwrite=True, store_text=False,
                            corpus_fingerprint=fp, dataset=ds.name, progress=False)
    secs = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in Path(args.index).iterdir())
    return {"seconds": round(secs, 1), "cpu_seconds": round(time.process_time() - c0, 1),
            "peak_rss_mb": round(_peak_mb()), "docs": r.num_docs,
            "terms": len(r._index.vocab), "postings": int(len(r._index.data)),
            "parts": -(-r.num_docs // args.chunk_size), "chunk_size": args.chunk_size,
            "index_bytes": size, "files": {p.name: p.stat().st_size for p in sorted(Path(args.index).iterdir())}}


def _load(args, verify: bool = True):
    from attnsift.retrieval.bm25 import BM25Retriever

    t0 = time.perf_counter()
    r = BM25Retriever.load(args.index, verify=verify, mmap=True)
    return r, time.perf_counter() - t0


def step_load(args) -> dict:
    base = _rss_mb()
    r, secs_nv = _load(args, verify=False)
    rss_nv = _rss_mb()
    del r
    r, secs = _load(args, verify=True)
    return {"seconds_verified": round(secs, 1), "seconds_unverified": round(secs_nv, 2),
            "rss_before_mb": round(base), "rss_loaded_mb": round(_rss_mb()), "rss_loaded_unverified_mb": round(rss_nv),
            "peak_rss_mb": round(_peak_mb()), "docs": r.num_docs}


def step_qps(args) -> dict:
    ds = _dataset(args.collection)
    queries = list(ds.queries.values())[: args.qps_queries]
    r, _ = _load(args, verify=False)
    r.retrieve_batch(queries[:20], k=1000)  # touch the analyzer and the query terms' first pages
    out = {"queries": len(queries), "rss_loaded_mb": round(_rss_mb())}
    for k in (1000, 100):
        t0, c0 = time.perf_counter(), time.process_time()
        run = r.retrieve_batch(queries, k=k, n_threads=1)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        out[f"qps_top{k}"] = round(len(queries) / secs, 1)
        out[f"qps_per_cpu_second_top{k}"] = round(len(queries) / cpu, 1)
        out[f"mean_len_top{k}"] = round(sum(len(x) for x in run.values()) / len(run), 1)
    out["rss_after_mb"] = round(_rss_mb())
    out["peak_rss_mb"] = round(_peak_mb())
    out["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    return out


def step_run(args) -> dict:
    from attnsift.eval.metrics import evaluate

    t_all = time.perf_counter()
    ds = _dataset(args.collection)
    queries = list(ds.queries.values())
    r, load_s = _load(args, verify=True)
    t0, c0 = time.perf_counter(), time.process_time()
    run = r.retrieve_batch(queries, k=1000, n_threads=1)
    retrieve_s, retrieve_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    # rank-derived scores from the columnar rankings: what evaluate(run) hands pytrec_eval, without
    # making 7M Candidate objects
    ranked = {qid: {d: float(len(ids) - i) for i, d in enumerate(ids)} for qid, ids in
              ((qid, rk.doc_ids) for qid, rk in run.items())}
    rep = evaluate(ranked, ds.qrels, metrics=["RR@10", "R@1000", "nDCG@10"])
    eval_s = time.perf_counter() - t0
    return {"queries": len(queries), "MRR@10": round(float(rep["RR@10"]), 4), "R@1000": round(float(rep["R@1000"]), 4),
            "nDCG@10": round(float(rep["nDCG@10"]), 4), "load_seconds": round(load_s, 1),
            "retrieve_seconds": round(retrieve_s, 1), "qps": round(len(queries) / retrieve_s, 1),
            "retrieve_cpu_seconds": round(retrieve_cpu, 1), "qps_per_cpu_second": round(len(queries) / retrieve_cpu, 1),
            "eval_seconds": round(eval_s, 1), "wall_seconds": round(time.perf_counter() - t_all, 1),
            "rss_after_mb": round(_rss_mb()), "peak_rss_mb": round(_peak_mb()),
            "load_avg": [round(x, 2) for x in os.getloadavg()]}


STEPS = {"build": step_build, "load": step_load, "qps": step_qps, "run": step_run}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collection", required=True, help="MS MARCO passage folder (official format)")
    ap.add_argument("--index", required=True, help="index folder to write / read")
    ap.add_argument("--chunk-size", type=int, default=250_000, help="documents per part of the build")
    ap.add_argument("--qps-queries", type=int, default=1000)
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    ap.add_argument("--step", choices=list(STEPS), help=argparse.SUPPRESS)  # one step, in this process
    ap.add_argument("--out", default=str(RESULTS / "scale"), help="output path without extension")
    args = ap.parse_args(argv)
    if args.step:
        print("RESULT " + json.dumps(STEPS[args.step](args)), flush=True)
        return 0
    out = Path(args.out)
    results = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    results.update({
        "command": "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (shared VM), "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, no GPU",
        "collection": args.collection,
    })
    results.setdefault("steps", {})
    for name in args.steps:
        cmd = [sys.executable, __file__, "--step", name, "--collection", args.collection, "--index", args.index,
               "--chunk-size", str(args.chunk_size), "--qps-queries", str(args.qps_queries)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"step {name} failed (exit {proc.returncode})")
        res = json.loads(line[len("RESULT "):])
        res["process_seconds"] = round(time.perf_counter() - t0, 1)
        res["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
        results["steps"][name] = res
        print(name, json.dumps(res), flush=True)
        from attnsift.io import atomic_write_json

        atomic_write_json(out.with_suffix(".json"), results)
    print(f"wrote {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
