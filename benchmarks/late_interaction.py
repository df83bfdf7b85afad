"""Late interaction, today's faiss token index against the compressed (PLAID-style) index, in one run.

Both indexes are built from the same cached MiniLM token vectors of the corpus (the encoding cache
makes a rerun quick). The queries are encoded once, outside the timed part; then the searches (faiss,
plaid with ``impl="auto"``, plaid with the other compiled variant (int16 / float32 table), plaid on the
numpy path) run interleaved in blocks of queries,
``--repeats`` times, one thread, and the best repeat of each counts
(wall clock and this thread's CPU time, so a shared machine's load shows as the gap between the two).
Quality (nDCG@10, R@100) is measured on the k=100 runs; sizes are bytes per token of each index, and
the projected MS MARCO size is bytes per token x 8.8M passages x their mean MiniLM token count
(measured on the TREC DL19 passages, which are MS MARCO passages).

    ATTNSIFT_DATA=/work/shared/data .venv/bin/python benchmarks/late_interaction.py --dataset scifact

Writes ``<out>.json`` and ``<out>.md`` (default ``benchmarks/results/late_interaction``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from attnsift.eval.datasets import load_dataset
from attnsift.eval.metrics import evaluate
from attnsift.retrieval.encoders import Encoder
from attnsift.retrieval.late_interaction import LateInteractionRetriever

log = logging.getLogger("late_interaction")
METRICS = ("nDCG@10", "R@100")
MSMARCO_PASSAGES = 8_841_823


def dir_bytes(path: Path, skip: tuple[str, ...] = ("documents.jsonl", "manifest.json", "doc_ids.json")) -> int:
    """Bytes of an index folder's search structures (texts and bookkeeping excluded)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name not in skip)


def timed(retriever, queries, qtok, k) -> tuple[list, float, float]:
    w, c = time.perf_counter(), time.thread_time()
    run = retriever.retrieve_encoded(queries, qtok, k=k, progress=False)
    return list(run.values()), time.perf_counter() - w, time.thread_time() - c


def stages(searcher, qtok, k, impl: str = "auto") -> dict:
    """CPU ms per query of each plaid step: centroid scores, probed-cell candidates, centroid interaction
    (the rest of the short list), exact MaxSim on the compressed tokens (``impl``: the compiled kernels, from
    ``S^T`` computed in their layout, or numpy, from torch's ``S``)."""
    from attnsift.indexes import plaid_kernel, plaid_kernel16, plaid_scores

    cpu = plaid_kernel.resolve(impl)
    index = searcher.index
    t0 = time.thread_time()
    if cpu == "numpy":
        s = [searcher.centroid_scores(q) for q in qtok]
    else:
        s = [plaid_scores.centroid_scores_t(index, q) for q in qtok]
    t1 = time.thread_time()
    for q, s_ in zip(qtok, s):
        if cpu == "numpy":
            searcher.approximate(q, s_, impl=impl)
        else:
            plaid_scores.probe(index, s_, q.shape[0], searcher.ncells)
    t2 = time.thread_time()
    short = [searcher._shortlist(q, s_, k, cpu) for q, s_ in zip(qtok, s)]
    t3 = time.thread_time()
    for q, s_, d in zip(qtok, s, short):
        if cpu == "numpy":
            index.exact_scores(q, s_, d, impl=impl)
        else:
            (plaid_kernel16 if cpu == "int16" else plaid_kernel).exact_scores(index, q, s_, d)
    t4 = time.thread_time()
    ms = lambda x: round(x / len(qtok) * 1e3, 2)  # noqa: E731
    return {"centroid_scores": ms(t1 - t0), "probed_candidates": ms(t2 - t1),
            "centroid_interaction": ms(t3 - t2 - (t2 - t1)), "exact": ms(t4 - t3),
            "exact_docs": float(np.mean([d.size for d in short]))}


def two_threads(retriever, queries, qtok, k) -> tuple[float, float]:
    """Wall seconds and process CPU seconds of the queries searched with ``n_threads=2`` (the library's
    thread pool; one torch thread each)."""
    w, c = time.perf_counter(), time.process_time()
    retriever.retrieve_encoded(queries, qtok, k=k, progress=False, n_threads=2)
    return time.perf_counter() - w, time.process_time() - c


def msmarco_tokens(encoder: Encoder, name: str, limit: int) -> float:
    """Mean MiniLM tokens per passage (special tokens dropped, truncated as the encoder truncates)."""
    ds = load_dataset(name)
    texts = [d.contents for _, d in zip(range(limit), ds.corpus.iter_documents())]
    ids = encoder.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=encoder.max_length)["input_ids"]
    return float(np.mean([len(x) - 2 for x in ids]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--block", type=int, default=50, help="queries per interleaved block")
    ap.add_argument("--candidate-k", type=int, default=32, help="today's faiss path: nearest tokens per query token")
    ap.add_argument("--plaid", nargs="*", default=[], help="plaid options key=value (ncentroids, nbits, ncells, candidates)")
    ap.add_argument("--sweep", nargs="*", default=[],
                    help="more plaid search settings NCELLS:CANDIDATES[:POOL], run once each (one thread, then two)")
    ap.add_argument("--sweep-impls", nargs="*", default=["auto"], help="plaid impls each sweep setting runs with")
    ap.add_argument("--msmarco", default="trec-dl19-passage", help="MS MARCO passages for the mean token count")
    ap.add_argument("--max-docs", type=int, default=None, help="dry run: the first N documents only")
    ap.add_argument("--max-queries", type=int, default=None, help="dry run: the first N queries only")
    ap.add_argument("--out", default="benchmarks/results/late_interaction")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    import torch

    torch.set_num_threads(1)
    from attnsift.config import parse_option_strings

    plaid_opts = parse_option_strings(args.plaid)
    encoder = Encoder("minilm", device="cpu")
    ds = load_dataset(args.dataset)
    docs = list(ds.corpus.iter_documents())[: args.max_docs]
    queries = list(ds.queries.values())[: args.max_queries]
    result: dict = {
        "command": "ATTNSIFT_DATA=/work/shared/data .venv/bin/python benchmarks/late_interaction.py " + " ".join(argv or sys.argv[1:]),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"2-core AMD EPYC VM ({platform.machine()}), 23 GiB, no GPU, torch {torch.__version__}; one thread",
        "dataset": args.dataset, "docs": len(docs), "queries": len(queries), "k": args.k,
        "load_avg_start": os.getloadavg(),
    }
    log.info("building today's index (faiss token ANN, candidate_k=%d)", args.candidate_k)
    faiss_r = LateInteractionRetriever.from_corpus(docs, encoder=encoder, candidate_k=args.candidate_k, progress=True)
    log.info("building the plaid index %s", plaid_opts)
    plaid_r = LateInteractionRetriever.from_corpus(docs, encoder=encoder, index="plaid", progress=True, **plaid_opts)
    t = time.perf_counter()
    qtok = encoder.encode_tokens([q.text for q in queries], is_query=True)
    q_enc = time.perf_counter() - t
    result["query_encoding"] = {"queries_per_s": round(len(queries) / q_enc, 1), "mean_query_tokens": float(np.mean([len(x) for x in qtok]))}
    import numba

    t = time.perf_counter()
    plaid_r.retrieve_encoded(queries[:1], qtok[:1], k=args.k, progress=False)  # loads (or compiles) the kernels
    result["numba"] = {"version": numba.__version__, "first_query_s": round(time.perf_counter() - t, 2)}
    # The numpy path on the same index (the plaid CPU choice set on the retriever, as impl= would set it).
    plaid_np = LateInteractionRetriever(plaid_r.encoder, plaid_r.index, plaid_r.documents, probe=plaid_r.probe,
                                        **plaid_r.plaid.search_options())
    plaid_np.impl = "numpy"
    plaid_np.stats = plaid_r.stats
    from attnsift.indexes import plaid_kernel

    other = "int16" if plaid_kernel.AUTO == "numba" else "numba"  # the compiled variant auto does not pick
    plaid_x = LateInteractionRetriever(plaid_r.encoder, plaid_r.index, plaid_r.documents, probe=plaid_r.probe,
                                       **plaid_r.plaid.search_options())
    plaid_x.impl = other
    plaid_x.stats = plaid_r.stats
    result["auto"], result["other_impl"] = plaid_kernel.AUTO, other

    modes = {"faiss": faiss_r, "plaid": plaid_r, "plaid_other": plaid_x, "plaid_numpy": plaid_np}
    best: dict = {m: {"wall": float("inf"), "cpu": float("inf")} for m in modes}
    rankings: dict = {}
    for rep in range(args.repeats):
        tot = {m: [0.0, 0.0] for m in modes}
        got: dict = {m: [] for m in modes}
        for s in range(0, len(queries), args.block):
            for m in (modes if (s // args.block + rep) % 2 == 0 else reversed(list(modes))):
                rk, w, c = timed(modes[m], queries[s : s + args.block], qtok[s : s + args.block], args.k)
                got[m] += rk
                tot[m][0] += w
                tot[m][1] += c
        for m in modes:
            best[m]["wall"] = min(best[m]["wall"], tot[m][0])
            best[m]["cpu"] = min(best[m]["cpu"], tot[m][1])
            rankings[m] = got[m]
        log.info("repeat %d: %s (load %s)", rep, tot, os.getloadavg())
    result["load_avg_end"] = os.getloadavg()

    stage = stages(plaid_r.searcher, qtok, args.k)
    stage_np = stages(plaid_r.searcher, qtok, args.k, impl="numpy")
    stage_x = stages(plaid_r.searcher, qtok, args.k, impl=other)
    log.info("plaid stages (cpu ms per query): %s; numpy path %s", stage, stage_np)

    from attnsift.types import Run

    sweep = []
    items = [f"{plaid_r.searcher.ncells}:{plaid_r.searcher.candidates}:{plaid_r.searcher.pool}", *args.sweep]
    for item, impl in [(i, m) for i in items for m in args.sweep_impls]:
        nc, cand, *pool = (int(x) for x in item.split(":"))
        r = LateInteractionRetriever(plaid_r.encoder, plaid_r.index, plaid_r.documents, probe=plaid_r.probe,
                                     ncells=nc, candidates=cand, pool=pool[0] if pool else None)
        r.impl = impl
        rk, w, c = timed(r, queries, qtok, args.k)
        rep_ = evaluate(Run(rk, name="plaid"), ds.qrels, metrics=METRICS, rel_level=ds.rel_level)
        w2, c2 = two_threads(r, queries, qtok, args.k)
        sweep.append({"ncells": nc, "candidates": cand, "pool": r.searcher.pool, "impl": plaid_kernel.resolve(impl),
                      **{k_: round(float(rep_[k_]), 4) for k_ in METRICS},
                      "qps_cpu": round(len(queries) / c, 1), "qps_wall": round(len(queries) / w, 1),
                      "two_threads_qps_wall": round(len(queries) / w2, 1),
                      "two_threads_qps_per_cpu_s": round(len(queries) / c2, 1),
                      "stages_ms_cpu": stages(r.searcher, qtok, args.k, impl=impl), "load_avg": os.getloadavg()})
        log.info("sweep %s", sweep[-1])
    result["sweep"] = sweep

    tmp = Path(tempfile.mkdtemp(prefix="attnsift-late-bench-"))
    mean_tok = msmarco_tokens(encoder, args.msmarco, 10_000)
    rows = {}
    for m, r in modes.items():
        run = Run(rankings[m], name=m)
        rep_ = evaluate(run, ds.qrels, metrics=METRICS, rel_level=ds.rel_level)
        path = r.save(tmp / m) if m != "plaid_numpy" else tmp / "plaid"  # the same index
        per_doc = dir_bytes(path) / len(docs)
        tpd = r.index.num_tokens / len(docs)
        if m.startswith("plaid"):
            b = r.index.bytes_per_token()
            fixed = r.index.centroids.nbytes  # does not grow with the corpus (the centroids)
            per_token = b["vectors"] + b["ivf"]
        else:
            bpd = r.index.bytes_per_doc()
            fixed = 0
            per_token = (bpd["vectors"] + bpd["ann"]) / tpd
        rows[m] = {
            **{k_: round(float(rep_[k_]), 4) for k_ in METRICS},
            "qps_wall": round(len(queries) / best[m]["wall"], 1), "qps_cpu": round(len(queries) / best[m]["cpu"], 1),
            "ms_per_query_cpu": round(best[m]["cpu"] / len(queries) * 1e3, 2),
            "index_bytes_per_doc": round(per_doc, 1), "index_bytes_per_token": round(per_doc / tpd, 1),
            "bytes_per_token_growing": round(per_token, 1), "tokens_per_doc": round(tpd, 1),
            "build_s": round(r.stats["index_s"], 1),
            "msmarco_projected_gb": round((per_token * mean_tok * MSMARCO_PASSAGES + fixed) / 1e9, 1),
        }
        if m.startswith("plaid"):
            rows[m].update({"bytes_per_token": {k_: round(v, 2) for k_, v in r.index.bytes_per_token().items()},
                            "ncentroids": r.index.ncentroids, "nbits": r.index.nbits, "ncells": r.searcher.ncells,
                            "candidates": r.searcher.candidates, "pool": r.searcher.pool,
                            "stages_ms_cpu": {"plaid": stage, "plaid_numpy": stage_np, "plaid_other": stage_x}[m]})
        else:
            rows[m].update({"ann": r.index.ann.info(), "candidate_k": args.candidate_k})
    overlap = [len(set(a.doc_ids[:10]) & set(b.doc_ids[:10])) / max(1, min(10, len(a))) for a, b in zip(rankings["faiss"], rankings["plaid"])]
    same = [a.doc_ids[:10] == b.doc_ids[:10] for a, b in zip(rankings["plaid"], rankings["plaid_numpy"])]
    result["plaid_numba_vs_numpy_identical_top10"] = int(sum(same))
    same_x = [a.doc_ids[:10] == b.doc_ids[:10] for a, b in zip(rankings["plaid"], rankings["plaid_other"])]
    result["plaid_auto_vs_other_identical_top10"] = int(sum(same_x))
    result.update({"results": rows, "msmarco_mean_tokens": round(mean_tok, 1), "msmarco_passages": MSMARCO_PASSAGES,
                   "top10_overlap_plaid_vs_faiss": round(float(np.mean(overlap)), 4),
                   "identical_top10_sets": int(sum(o == 1.0 for o in overlap))})
    shutil.rmtree(tmp, ignore_errors=True)  # the saved indexes (~1 GB on SciFact) were only measured
    write(result, Path(args.out))
    return 0


def write(result: dict, out: Path) -> None:
    from attnsift.io import atomic_write_json, atomic_write_text

    atomic_write_json(out.with_suffix(".json"), result)
    r = result["results"]
    f, p, px, pn = r["faiss"], r["plaid"], r["plaid_other"], r["plaid_numpy"]
    auto, other = result.get("auto", "numba"), result.get("other_impl", "int16")
    lines = [
        "# Late interaction: compressed (PLAID-style) index against today's faiss token index",
        "",
        f"- command: `{result['command']}`",
        f"- date: {result['date']}; machine: {result['machine']}",
        f"- load average (1, 5, 15 min) at start {tuple(round(x, 1) for x in result['load_avg_start'])}, "
        f"at end {tuple(round(x, 1) for x in result['load_avg_end'])} (2 cores shared by other workers)",
        f"- {result['dataset']}: {result['docs']} documents, {result['queries']} queries, k={result['k']}; MiniLM "
        f"(all-MiniLM-L6-v2) token vectors, dim 384; queries encoded once outside the timing "
        f"({result['query_encoding']['queries_per_s']} queries/s, {result['query_encoding']['mean_query_tokens']:.1f} "
        "tokens each)",
        "- queries/s: the four searches interleaved in blocks of queries, best of the repeats; `cpu` counts this "
        "thread's CPU time only (what an idle core would give), `wall` includes waiting for the shared CPU",
        "",
        "| index | nDCG@10 | R@100 | q/s (cpu) | q/s (wall) | bytes/token | index bytes/doc | build s | MS MARCO projected |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v, what in (("faiss (today: float16 tokens + IVF-PQ token ANN)", f, ""),
                          (f"plaid, compiled kernels (impl=auto: {auto})", p, ""),
                          (f"plaid, compiled kernels (impl={other})", px, ""), ("plaid, numpy path (impl=numpy)", pn, "")):
        lines.append(f"| {name} | {v['nDCG@10']:.4f} | {v['R@100']:.4f} | {v['qps_cpu']} | {v['qps_wall']} | "
                     f"{v['bytes_per_token_growing']} | {v['index_bytes_per_doc']:.0f} | {v['build_s']} | "
                     f"{v['msmarco_projected_gb']} GB |")
    b = p["bytes_per_token"]
    lines += [
        "",
        f"- plaid: {p['ncentroids']} centroids, {p['nbits']} bits per dimension, ncells={p['ncells']}, "
        f"candidates={p['candidates']}, pool={p['pool']}; bytes per token: {b['vectors']} (code + residual) + {b['ivf']} (inverted "
        f"lists) + {b['shared']} (centroids and buckets, shared by the corpus); vectors = 2 (code) + 96 (residual) + 1 "
        "(scale)",
        f"- plaid time per query (cpu): {p['ms_per_query_cpu']} ms; by step (cpu ms, measured apart): "
        + ", ".join(f"{k_} {v}" for k_, v in p["stages_ms_cpu"].items()),
        f"- impl={other} time per query (cpu): {px['ms_per_query_cpu']} ms; by step: "
        + ", ".join(f"{k_} {v}" for k_, v in px["stages_ms_cpu"].items()),
        f"- numpy path time per query (cpu): {pn['ms_per_query_cpu']} ms; by step: "
        + ", ".join(f"{k_} {v}" for k_, v in pn["stages_ms_cpu"].items()),
        f"- numba {result['numba']['version']}; the first plaid query (kernels loaded from numba's disk cache, or "
        f"compiled): {result['numba']['first_query_s']} s; compiled and numpy paths give the same top-10 for "
        f"{result['plaid_numba_vs_numpy_identical_top10']} of {result['queries']} queries; impl=auto ({auto}) and "
        f"impl={other}: {result.get('plaid_auto_vs_other_identical_top10')} of {result['queries']}",
        f"- top-10 overlap of plaid with today's path: {result['top10_overlap_plaid_vs_faiss']} "
        f"({result['identical_top10_sets']} of {result['queries']} queries identical)",
        f"- MS MARCO projection: {result['msmarco_passages']:,} passages x {result['msmarco_mean_tokens']} MiniLM tokens "
        "(mean over the TREC DL19 passages, max 256) x the growing bytes per token (plaid: code + residual + "
        "inverted lists, plus the centroids; faiss: float16 vectors + IVF-PQ codes and ids)",
    ]
    if result.get("sweep"):
        lines += ["", "Plaid search settings on the same index (the defaults first; one pass each, not interleaved; "
                  "two threads: `n_threads=2`, the library's thread pool, wall clock and queries per CPU second):", "",
                  "| impl | ncells | candidates (exact) | pool (centroid interaction) | nDCG@10 | R@100 | q/s (cpu, 1 thread) | "
                  "q/s (wall, 1 thread) | q/s (wall, 2 threads) | q/s per CPU s (2 threads) | ms/query by step (cpu) | load |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {v.get('impl', 'numba')} | {v['ncells']} | {v['candidates']} | {v['pool']} | {v['nDCG@10']:.4f} | {v['R@100']:.4f} | "
                  f"{v['qps_cpu']} | {v['qps_wall']} | {v['two_threads_qps_wall']} | {v['two_threads_qps_per_cpu_s']} | "
                  + " / ".join(str(x) for x in list(v["stages_ms_cpu"].values())[:4])
                  + f" | {v['load_avg'][0]:.1f} |" for v in result["sweep"]]
    lines += [
        "",
        "Details (JSON): " + out.with_suffix(".json").name,
        "",
    ]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
