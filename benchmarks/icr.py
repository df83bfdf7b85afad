"""ICR benchmark: quality (BM25 vs ICR calibrations vs listwise) and cost (attnsift vs eager two-pass).

    python benchmarks/icr.py quality --queries 10 --max-words 60 --top-k 20 --listwise-queries 5
    python benchmarks/icr.py cost --candidates 20 100

Quality uses its own small BEIR reader, bm25s (Lucene BM25, k1=0.9, b=0.4, English stemmer and stop
words) for SciFact / NFCorpus and the provided BM25 run for DL19, and ir_measures for the metrics, so
it does not depend on the evaluation modules being written in parallel. Writes
benchmarks/results/icr_quality.{md,json} and icr_cost.{md,json}.
Cost runs every configuration in a fresh subprocess and reads its peak RSS with resource.getrusage.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(os.environ.get("ATTNSIFT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            q, d, s = line.split("\t")[:3]
            qrels.setdefault(q, {})[d] = int(s)
    return qrels


def first_stage(name: str, n_queries: int, k: int):
    """(queries [(qid, text)], candidates {qid: [doc ids]}, docs {id: (title, text)}, qrels)."""
    folder = DATA / name
    qrels = read_qrels(folder / "qrels" / "test.tsv")
    corpus = {d["_id"]: (d.get("title") or None, d["text"]) for d in read_jsonl(folder / "corpus.jsonl")}
    queries = [(q["_id"], q["text"]) for q in read_jsonl(folder / "queries.jsonl") if q["_id"] in qrels][:n_queries]
    cands: dict[str, list[str]] = {}
    if name == "trec-dl19-passage":
        for line in open(folder / "runs" / "bm25_flat.top100.trec"):
            q, _, d, rank, *_ = line.split()
            cands.setdefault(q, []).append((int(rank), d))
        cands = {q: [d for _, d in sorted(v)][:k] for q, v in cands.items()}
    else:
        import bm25s
        import Stemmer

        ids = list(corpus)
        stem = Stemmer.Stemmer("english")
        texts = [f"{t} {x}" if t else x for t, x in (corpus[i] for i in ids)]
        retr = bm25s.BM25(method="lucene", k1=0.9, b=0.4)
        retr.index(bm25s.tokenize(texts, stopwords="en", stemmer=stem, show_progress=False), show_progress=False)
        qt = bm25s.tokenize([t for _, t in queries], stopwords="en", stemmer=stem, show_progress=False)
        res, _ = retr.retrieve(qt, k=k, show_progress=False)
        cands = {qid: [ids[j] for j in row] for (qid, _), row in zip(queries, res)}
    return queries, cands, corpus, qrels


def metrics(run: dict, qrels: dict, rel_level: int) -> dict:
    import ir_measures
    from ir_measures import MRR, nDCG

    ms = [nDCG @ 10, MRR(rel=rel_level) @ 10]
    agg = ir_measures.calc_aggregate(ms, {q: qrels.get(q, {}) for q in run}, run)
    return {"nDCG@10": round(agg[ms[0]], 4), "MRR@10": round(agg[ms[1]], 4)}


def quality(args) -> None:
    from attnsift.rerank.icr import ICRReranker
    from attnsift.rerank.listwise import ListwiseReranker
    from attnsift.types import Candidate, Document, Query, Ranking

    icr = ICRReranker(args.model, max_words=args.max_words)
    lw = ListwiseReranker(icr.model, tokenizer=icr.tokenizer, max_words=args.max_words) if args.listwise_queries else None
    out = {"command": " ".join(sys.argv), "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": f"{platform.machine()} {os.cpu_count()} cores (shared), no GPU", "model": args.model,
           "top_k": args.top_k, "max_words": args.max_words, "datasets": {}}
    for name in args.datasets:
        queries, cands, corpus, qrels = first_stage(name, args.queries, args.top_k)
        rel = 2 if name.startswith("trec-dl") else 1
        runs = {m: {} for m in ("bm25", "icr_masked_na", "icr_na", "icr_none", "na_only", "listwise")}
        secs = []
        diag = {"masked_na_drop_frac": [], "corr_raw_na": []}
        for qi, (qid, text) in enumerate(queries):
            ids = cands[qid]
            r = Ranking(Query(qid, text), tuple(Candidate(d, float(len(ids) - i), Document(d, corpus[d][1], corpus[d][0]))
                                                for i, d in enumerate(ids)))
            t = time.perf_counter()
            det = icr.score_details(r)
            secs.append(time.perf_counter() - t)
            for i, d in enumerate(r.doc_ids):
                runs["bm25"][qid] = {**runs["bm25"].get(qid, {}), d: float(len(ids) - i)}
            for key, vals in (("icr_masked_na", det.masked), ("icr_na", det.calibrated), ("icr_none", det.raw),
                              ("na_only", det.na)):
                runs[key][qid] = dict(zip(r.doc_ids, vals))
            import numpy as np

            diag["corr_raw_na"].append(float(np.corrcoef(det.raw, det.na)[0, 1]))
            if lw is not None and qi < args.listwise_queries:
                runs["listwise"][qid] = dict(zip(r.doc_ids, lw.score(r)))
            print(f"{name} {qi + 1}/{len(queries)} {secs[-1]:.1f}s {det.num_tokens} tokens", file=sys.stderr, flush=True)
        res = {m: metrics(run, qrels, rel) for m, run in runs.items() if run}
        lw_q = list(runs["listwise"])
        if lw_q:
            res["bm25_on_listwise_subset"] = metrics({q: runs["bm25"][q] for q in lw_q}, qrels, rel)
            res["icr_none_on_listwise_subset"] = metrics({q: runs["icr_none"][q] for q in lw_q}, qrels, rel)
        out["datasets"][name] = {"queries": len(queries), "listwise_queries": len(lw_q), "metrics": res,
                                 "icr_sec_per_query": round(sum(secs) / len(secs), 2),
                                 "mean_corr_raw_vs_na": round(sum(diag["corr_raw_na"]) / len(queries), 3)}
        print(json.dumps(out["datasets"][name]), file=sys.stderr, flush=True)
        from attnsift.io import atomic_write_json

        atomic_write_json(RESULTS / "icr_quality.json", out)


def _child(cfg: dict) -> dict:
    """One cost configuration, run in this (fresh) process; returns seconds and peak RSS."""
    import resource

    from attnsift.rerank.icr import ICRConfig, ICRReranker, reference_scores
    from attnsift.rerank.llm import load_causal_lm
    from attnsift.types import Candidate, Document, Query, Ranking

    model, tok = load_causal_lm(cfg["model"])
    docs = [d for d in read_jsonl(DATA / "trec-dl19-passage" / "corpus.jsonl")[: cfg["n"]]]
    r = Ranking(Query("q", "what is the role of attention in ranking"),
                tuple(Candidate(d["_id"], float(cfg["n"] - i), Document(d["_id"], d["text"])) for i, d in enumerate(docs)))
    conf = ICRConfig(max_words=cfg["max_words"])
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    if cfg["impl"] == "attnsift":
        det = ICRReranker(model, tokenizer=tok, config=conf).score_details(r)
    else:
        det = reference_scores(model, tok, r, conf)
    sec = time.perf_counter() - t
    return {"seconds": round(sec, 2), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_after_load_mb": round(base_rss, 1), "tokens": det.num_tokens, "scores": det.scores}


def cost(args) -> None:
    rows = []
    for n in args.candidates:
        for impl in ("attnsift", "eager_two_pass"):
            if impl == "eager_two_pass" and n > args.max_eager_candidates:
                rows.append({"n": n, "impl": impl, "skipped": f"more than {args.max_eager_candidates} candidates"})
                continue
            cfg = {"model": args.model, "n": n, "impl": impl, "max_words": args.max_words}
            p = subprocess.run([sys.executable, __file__, "_child", json.dumps(cfg)], capture_output=True, text=True)
            if p.returncode != 0:
                rows.append({"n": n, "impl": impl, "error": p.stderr[-800:]})
            else:
                rows.append({"n": n, "impl": impl, **json.loads(p.stdout.strip().splitlines()[-1])})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "scores"}), file=sys.stderr, flush=True)
    out = {"command": " ".join(sys.argv), "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": f"{platform.machine()} {os.cpu_count()} cores (shared with other jobs), no GPU",
           "model": args.model, "max_words": args.max_words, "rows": rows}
    from attnsift.io import atomic_write_json

    atomic_write_json(RESULTS / "icr_cost.json", out)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_child":
        print(json.dumps(_child(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--model", default="smollm2-135m")
    q.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus", "trec-dl19-passage"])
    q.add_argument("--queries", type=int, default=10)
    q.add_argument("--top-k", type=int, default=20)
    q.add_argument("--max-words", type=int, default=60)
    q.add_argument("--listwise-queries", type=int, default=0)
    c = sub.add_parser("cost")
    c.add_argument("--model", default="smollm2-135m")
    c.add_argument("--candidates", type=int, nargs="+", default=[20, 100])
    c.add_argument("--max-words", type=int, default=40)
    c.add_argument("--max-eager-candidates", type=int, default=20)
    a = ap.parse_args()
    quality(a) if a.cmd == "quality" else cost(a)


if __name__ == "__main__":
    main()
