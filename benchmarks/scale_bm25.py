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
    import statistics

    import numpy as np

    from attnsift.retrieval.bm25_blockmax import blockmax_for, compute_blockmax

    ds = _dataset(args.collection)
    queries = list(ds.queries.values())[: args.qps_queries]
    r, _ = _load(args, verify=False)
    had_sidecar = (Path(args.index) / "blockmax.json").is_file()
    t0, c0 = time.perf_counter(), time.process_time()
    bm = blockmax_for(r)  # read from beside the index, or computed (and written) for an older index
    out = {"queries": len(queries), "blockmax_seconds": round(time.perf_counter() - t0, 2),
           "blockmax_cpu_seconds": round(time.process_time() - c0, 2),
           "blockmax_source": "sidecar" if had_sidecar and isinstance(bm.maxima, np.memmap) else "computed",
           "blockmax_rows": int(len(bm.terms)), "blockmax_bytes": int(bm.maxima.nbytes),
           "blockmax_bits_bytes": int(bm.bits.nbytes), "rss_loaded_mb": round(_rss_mb())}
    t0, c0 = time.perf_counter(), time.process_time()
    compute_blockmax(r._index)  # what an index without the sidecar pays once (then writes it)
    out["blockmax_compute_seconds"] = round(time.perf_counter() - t0, 1)
    out["blockmax_compute_cpu_seconds"] = round(time.process_time() - c0, 1)
    # one untimed-for-the-table pass first: the first touch of the postings reads them from disk (or
    # the page cache others' jobs left), which is not the steady state the rounds measure
    t0, c0 = time.perf_counter(), time.process_time()
    r.retrieve_batch(queries, k=1000)
    out["cold_pass_qps_top1000"] = round(len(queries) / (time.perf_counter() - t0), 1)
    out["cold_pass_qps_per_cpu_second_top1000"] = round(len(queries) / (time.process_time() - c0), 1)
    # rounds interleaved (k x threads), the same queries each time; median and best of the rounds
    times: dict[tuple[int, int], list[tuple[float, float]]] = {}
    answers: dict[tuple[int, int], dict] = {}
    for _ in range(args.qps_repeats):
        for k in (1000, 100):
            for t in args.threads:
                t0, c0 = time.perf_counter(), time.process_time()
                run = r.retrieve_batch(queries, k=k, n_threads=t)
                times.setdefault((k, t), []).append((time.perf_counter() - t0, time.process_time() - c0))
                answers.setdefault((k, t), {q: (rk.doc_ids, list(rk.scores().values())) for q, rk in run.items()})
                out[f"mean_len_top{k}"] = round(sum(len(x) for x in run.values()) / len(run), 1)
    for (k, t), ts in times.items():
        wall = [len(queries) / w for w, _ in ts]
        key = f"top{k}_threads{t}"
        out[key] = {"qps_median": round(statistics.median(wall), 1), "qps_best": round(max(wall), 1),
                    "qps_per_cpu_second": round(len(queries) / statistics.median(c for _, c in ts), 1)}
        if t == 1:  # the figures of earlier runs (one thread)
            out[f"qps_top{k}"] = out[key]["qps_median"]
            out[f"qps_per_cpu_second_top{k}"] = out[key]["qps_per_cpu_second"]
    out["threads"] = list(args.threads)
    out["repeats"] = args.qps_repeats
    out["same_results_all_threads"] = all(answers[(k, t)] == answers[(k, args.threads[0])] for k, t in answers)
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
    t_wall = time.perf_counter() - t_all
    threads = {}
    for t in args.threads:  # the same run again with more threads (not in the wall time)
        if t != 1:
            t1 = time.perf_counter()
            again = r.retrieve_batch(queries, k=1000, n_threads=t)
            threads[str(t)] = {"retrieve_seconds": round(time.perf_counter() - t1, 1),
                               "same_run": all(again[q].doc_ids == rk.doc_ids for q, rk in run.items())}
    return {"queries": len(queries), "MRR@10": round(float(rep["RR@10"]), 4), "R@1000": round(float(rep["R@1000"]), 4),
            "nDCG@10": round(float(rep["nDCG@10"]), 4), "load_seconds": round(load_s, 1),
            "retrieve_seconds": round(retrieve_s, 1), "qps": round(len(queries) / retrieve_s, 1),
            "retrieve_cpu_seconds": round(retrieve_cpu, 1), "qps_per_cpu_second": round(len(queries) / retrieve_cpu, 1),
            "eval_seconds": round(eval_s, 1), "wall_seconds": round(t_wall, 1),
            "rss_after_mb": round(_rss_mb()), "peak_rss_mb": round(_peak_mb()), "threads": threads,
            "load_avg": [round(x, 2) for x in os.getloadavg()]}


STEPS = {"build": step_build, "load": step_load, "qps": step_qps, "run": step_run}

TARGETS = {"build_peak_gb": 12, "loaded_gb": 3, "qps": 100}


def _cell(steps: dict, step: str, key: str, fmt: str = "{}") -> str:
    value = steps.get(step, {}).get(key)
    return "not measured" if value is None else fmt.format(value)


def render(paths: list[str], out: Path) -> None:
    """``<out>.json`` (every collection's figures) and ``<out>.md`` (tables and the reading below)."""
    from attnsift.io import atomic_write_json, atomic_write_text

    runs = [json.loads(Path(p).read_text()) for p in paths if Path(p).is_file()]
    runs.sort(key=lambda r: r["steps"].get("build", {}).get("docs") or 0, reverse=True)
    atomic_write_json(out.with_suffix(".json"), {"collections": runs})
    lines = ["# BM25 at MS MARCO scale (synthetic collection in the official format)", "",
             "Dense retrieval at the same scale: [scale_dense.md](scale_dense.md).", ""]
    for r in runs:
        st = r["steps"]
        b, ld, q, run = (st.get(x, {}) for x in ("build", "load", "qps", "run"))
        docs = b.get("docs") or ld.get("docs")
        lines += [f"## {docs:,} passages ({r['collection']})" if docs else f"## {r['collection']}", ""]
        by_command: dict[str, list[str]] = {}
        for name in ("build", "load", "qps", "run"):
            if name in st:
                by_command.setdefault(st[name].get("command", r["command"]), []).append(name)
        for cmd, names in by_command.items():
            date = st[names[0]].get("date", r["date"])
            lines.append(f"- {', '.join(names)}: `{cmd}` ({date})")
        lines += [f"- machine: {r['machine']}", ""]
        rows = [
            ("build: wall time", _cell(st, "build", "seconds", "{:,.0f} s") + " (" + _cell(st, "build", "cpu_seconds", "{:,.0f}")
             + " CPU s)", "", f"load avg after {b.get('load_avg_after', ['?'])[0]}"),
            ("build: peak RSS", _cell(st, "build", "peak_rss_mb", "{:,} MB"), f"<= {TARGETS['build_peak_gb']} GB",
             f"{b.get('parts', '?')} parts of {b.get('chunk_size', '?'):,} docs; {b.get('postings', 0):,} postings, "
             f"{b.get('terms', 0):,} terms; index {b.get('index_bytes', 0) / 2**30:.2f} GiB on disk" if b else ""),
            ("loaded RSS (mmap, checksums verified)", _cell(st, "load", "rss_loaded_mb", "{:,} MB"), f"<= {TARGETS['loaded_gb']} GB",
             "load " + _cell(st, "load", "seconds_verified", "{} s") + " verified, "
             + _cell(st, "load", "seconds_unverified", "{} s") + " without checksums"),
        ]
        for k in (1000, 100):
            for t in q.get("threads", [1]):
                cell = q.get(f"top{k}_threads{t}")
                if cell is None and t == 1 and f"qps_top{k}" in q:  # an earlier run's figures
                    cell = {"qps_median": q[f"qps_top{k}"], "qps_per_cpu_second": q[f"qps_per_cpu_second_top{k}"]}
                measured = "not measured" if cell is None else (
                    f"{cell['qps_median']:,} (best {cell.get('qps_best', '?')}; {cell['qps_per_cpu_second']} per CPU s)")
                first = (f"after a first pass ({q['cold_pass_qps_top1000']} q/s)" if "cold_pass_qps_top1000" in q
                         else "after a 20-query warm-up (the first round reads the postings from disk)")
                note = (f"{q.get('queries', '?')} dev/small queries, median of {q.get('repeats', 1)} interleaved rounds "
                        f"{first}; load avg {q.get('load_avg', ['?'])[0]}") if k == 1000 and t == 1 else ""
                if k == 1000 and t != 1:
                    note = f"same rankings as 1 thread: {q.get('same_results_all_threads', '?')}"
                if k == 100 and t == 1:
                    note = (f"block maxima: {q.get('blockmax_rows', '?')} rows, {q.get('blockmax_bytes', 0) / 2**20:.1f} MiB "
                            f"+ {q.get('blockmax_bits_bytes', 0) / 2**20:.0f} MiB bitmaps, read from the sidecar in "
                            f"{q.get('blockmax_seconds', '?')} s, computed in {q.get('blockmax_compute_seconds', '?')} s; "
                            "RSS after " + _cell(st, "qps", "rss_after_mb", "{:,} MB"))
                rows.append((f"queries/s, top-{k}, 1 process, {t} thread{'s' * (t > 1)}", measured,
                             f">= {TARGETS['qps']}", note))
        rows += [
            ("dev/small run: MRR@10 / R@1000", _cell(st, "run", "MRR@10") + " / " + _cell(st, "run", "R@1000"), "",
             f"{run.get('queries', '?')} queries, 1,000 each; nDCG@10 " + _cell(st, "run", "nDCG@10")),
            ("dev/small run: wall time", _cell(st, "run", "wall_seconds", "{:,.0f} s"), "",
             "retrieval " + _cell(st, "run", "retrieve_seconds", "{:,.0f} s") + " (" + _cell(st, "run", "retrieve_cpu_seconds", "{:,.0f}")
             + " CPU s), evaluation " + _cell(st, "run", "eval_seconds", "{:,.0f} s") + "; peak RSS "
             + _cell(st, "run", "peak_rss_mb", "{:,} MB") + f"; load avg {run.get('load_avg', ['?'])[0]}"),
        ]
        for t, cell in run.get("threads", {}).items():
            rows.append((f"dev/small run: retrieval, {t} threads", f"{cell['retrieve_seconds']:,.0f} s", "",
                         f"{run.get('queries', 0) / cell['retrieve_seconds']:.1f} q/s; same run as 1 thread: {cell['same_run']}"))
        lines += ["| figure | measured | target | notes |", "|---|---:|---|---|"]
        lines += [f"| {a} | {m} | {t} | {n} |" for a, m, t, n in rows]
        lines.append("")
    lines.append(NOTES)
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")


NOTES = """## How it works

- **Streaming build** (`BM25Retriever.build(corpus, path, chunk_size=...)`, indexes/bm25_build.py):
  documents are analysed one at a time (the same Lucene-like analysis as before) and every
  `chunk_size` documents become a part: their (document, term, tf) postings in a checksummed `.npz`.
  Memory holds the vocabulary, one number per document (its length) and one part. The merge computes
  N, the average length and the document frequencies, then scores each part with bm25s's own scoring
  functions and scatters it straight into `data.npy` / `indices.npy` opened as writable memory maps,
  one part at a time. The result equals bm25s's `build_index_from_ids` bit for bit and
  `from_corpus(...).save(...)` file for file (tests/unit/retrieval/test_bm25_streaming.py). Ids and
  texts stream to `doc_ids.txt` / `documents.jsonl` with byte offsets.
- **Memory-mapped load** (`BM25Retriever.load(path, mmap=None)`: mapped when the postings exceed
  512 MiB): the postings stay on disk (numpy `mmap_mode="r"`, handed to scipy without a copy), ids and
  texts are read from their files for the results that need them; no Document objects are held (with
  `store_text=False`, as here, texts come from the corpus through Pipeline's `corpus=` path).
- **Queries**: a chunk of queries is one sparse product over the matching postings; a query whose
  terms hold >= 200K postings takes the exact block-max path instead (retrieval/bm25_blockmax.py).
  Beside the index, for each frequent term (in >= 1/32 of the passages: "what", "how"), a row of
  per-block score bounds (blocks of 256 passages, uint16) and a presence bitmap; they are written by
  the build, or computed at the first query of an older index and stored then, with their own key
  (the index's checksums) and sha256. The query reads its rare terms whole (their lists merged by a
  stable sort), takes the k-th best partial sum as a threshold, scores whole only the blocks whose
  frequent-term bound reaches it (in growing batches that raise it), and looks the frequent terms up
  (binary search) only for the candidates that hold them and whose bound reaches it. Candidates are
  scored as the product scores them (float32, term-id order), so rankings and scores are
  bit-identical (tests/unit/retrieval/test_bm25_blockmax.py). Queries whose bounds prune little
  (two frequent terms, few rare matches) give up after a first batch and take the product. Top-k
  selection over long score lists is prefiltered by the k-th best of a strided sample.

## Reading

- **Queries at full size** (2026-12-01, after the block-max path; the qps and run steps ran under the
  shared lock at load average ~1.7-2.5, other helpers' jobs still running): top-1000 with one thread
  131 q/s (median of two rounds, 131 per CPU second), 222 q/s with 2 threads; top-100 172 q/s with
  one thread, 289 with 2. The whole dev/small run (6,980 queries, 1,000 each) retrieves in 53 s with
  one thread (132 q/s; 28 s, 245 q/s with 2 threads) and takes 68 s end to end with loading and
  evaluation, against 127 s before. Before this change the same 1,000 queries ran at 35 q/s (55 per
  CPU second) at top-1000 and 86 q/s at top-100 (at load ~4): the >= 100 queries/s target is met at
  top-1000 and top-100, one thread and two, on this machine at this load. Not in the table: the
  first pass over the 1,000 queries (before the rounds) ran at 28 q/s (116 per CPU second): it read
  the postings from disk, other jobs having taken the page cache; an earlier run of the qps step
  without that pass recorded 90 q/s (median of a cold and a warm round, 135 warm). At a load of 10+
  (most of the afternoon) wall figures are 2-4x lower.
- **Where a top-1000 query's time goes now** (cProfile and timers at full size, ~4 ms of CPU for a
  pruned query): merging the rare terms' postings (~1.3 ms: a stable argsort of their concatenation),
  looking the frequent terms up for the surviving candidates (~0.7 ms, binary searches), the k-th
  best partial sum (~0.6 ms), the per-query numpy calls; then per query the analysis, the selection
  and the 1,000 ids. The sparse product is now paid only by queries below 200K postings (cheap) and
  by the ~2% whose bounds prune little (two frequent terms and almost no rare matches: they give up
  after the first batch).
- **Threads**: 2 threads give 1.7x at top-1000 and top-100 at full size (numpy's kernels release the
  GIL; the per-query work is large enough). At 1M passages a query's work is small and mostly
  Python-side: 2 threads are slower than one there (527 against 606 q/s).
- **Exact**: pruned and plain rankings and scores are bit-identical (tests on small corpora with
  forced pruning, both the block and the look-up scoring; at full size 200 sampled dev/small queries
  at k = 1000, 100 and 10: 0 differences); 1 and 2 threads give the same rankings (recorded above).
- **Block maxima beside the index**: 117 frequent terms (>= 276,306 postings), 7.7 MiB of bounds and
  123 MiB of presence bitmaps, memory-mapped (the RSS after the queries, 2.4 GB, counts the index's
  mapped pages the queries touched). The build writes them; an index built before them computes
  them at its first pruned query (18 s here, 1.4 CPU s: reading those terms' postings from disk) and
  stores them with their own key and checksums.
- **Build rows** are the integrator's measurement, kept: the index files are the same. The rebuild for
  this run (the same code plus the block maxima) took 3,620 s wall, 1,169 CPU s, 4,197 MB peak at
  load 6-12 (started at nice 19, raised to nice 0 after 10 minutes so it would finish in time).
- The 1M collection is the same seeded collection as before (same terms and postings); its build and
  load rows are kept from that run, its query rows are new.
- The synthetic queries are far easier than real MS MARCO (MRR@10 0.92 against BM25's real 0.187):
  the collection measures time and memory, not quality (synthetic_msmarco.md).
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collection", help="MS MARCO passage folder (official format)")
    ap.add_argument("--index", help="index folder to write / read")
    ap.add_argument("--chunk-size", type=int, default=250_000, help="documents per part of the build")
    ap.add_argument("--qps-queries", type=int, default=1000)
    ap.add_argument("--qps-repeats", type=int, default=2, help="interleaved rounds of the qps step")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="n_threads values of the qps step (and of a second pass of the run step)")
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    ap.add_argument("--step", choices=list(STEPS), help=argparse.SUPPRESS)  # one step, in this process
    ap.add_argument("--out", default=str(RESULTS / "scale"), help="output path without extension")
    ap.add_argument("--render", nargs="+", metavar="JSON",
                    help="only write <out>.md and <out>.json from these per-collection result files")
    args = ap.parse_args(argv)
    if args.render:
        render(args.render, Path(args.out))
        return 0
    if not args.collection or not args.index:
        ap.error("--collection and --index are required (except with --render)")
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
               "--chunk-size", str(args.chunk_size), "--qps-queries", str(args.qps_queries),
               "--qps-repeats", str(args.qps_repeats), "--threads", *map(str, args.threads)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"step {name} failed (exit {proc.returncode})")
        res = json.loads(line[len("RESULT "):])
        res["process_seconds"] = round(time.perf_counter() - t0, 1)
        res["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
        res["command"] = results["command"]
        res["date"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        results["steps"][name] = res
        print(name, json.dumps(res), flush=True)
        from attnsift.io import atomic_write_json

        atomic_write_json(out.with_suffix(".json"), results)
    print(f"wrote {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
