"""First-stage benchmark: BM25, dense (MiniLM), late interaction (MiniLM tokens), hybrid BM25+dense.

For each data set: nDCG@10 and R@100 on the test queries, queries/second, index bytes per document,
and (once) the encoding throughput in passages/second. Document encodings are cached in resumable
chunks under ``--cache`` (default ``indexes_cache/first_stage``, git-ignored), so a rerun or an
interrupted run does not re-encode.

    ATTNSIFT_DATA=/work/shared/data .venv/bin/python benchmarks/first_stage.py \
        --datasets scifact nfcorpus --out benchmarks/results/first_stage

Writes ``<out>.json`` and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

from attnsift.eval.datasets import load_dataset
from attnsift.eval.metrics import evaluate
from attnsift.retrieval.dense import DenseRetriever
from attnsift.retrieval.encoders import Encoder
from attnsift.retrieval.fusion import reciprocal_rank_fusion, score_fusion
from attnsift.retrieval.late_interaction import LateInteractionRetriever
from attnsift.types import Run

log = logging.getLogger("first_stage")
METRICS = ("nDCG@10", "R@100")


def dir_bytes(path: Path, skip: tuple[str, ...] = ("documents.jsonl", "manifest.json", "doc_ids.json")) -> int:
    """Bytes of an index folder's search structures (texts and bookkeeping excluded)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name not in skip)


def timed_run(retriever, queries, k=100) -> tuple[Run, float]:
    t = time.perf_counter()
    run = retriever.retrieve_batch(queries, k=k)
    return run, time.perf_counter() - t


def score(run, ds) -> dict:
    rep = evaluate(run, ds.qrels, metrics=METRICS, rel_level=ds.rel_level)
    return {m: round(float(rep[m]), 4) for m in METRICS}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--cache", default="indexes_cache/first_stage")
    ap.add_argument("--out", default="benchmarks/results/first_stage")
    ap.add_argument("--throughput-docs", type=int, default=256)
    ap.add_argument("--candidate-k", type=int, default=32)
    ap.add_argument("--skip", nargs="*", default=[], help="retrievers to skip: bm25 dense late hybrid")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)

    encoder = Encoder(args.model)
    result = {
        "command": "ATTNSIFT_DATA=/work/shared/data .venv/bin/python benchmarks/first_stage.py " + " ".join(argv or sys.argv[1:]),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"2-core shared CPU ({platform.processor() or platform.machine()}), 24 GB RAM, no GPU; torch CPU",
        "encoder": encoder.config,
        "datasets": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="attnsift-first-stage-"))
    for name in args.datasets:
        ds = load_dataset(name)
        docs = list(ds.corpus.iter_documents())
        queries = list(ds.queries.values())
        log.info("%s: %d docs, %d queries", name, len(docs), len(queries))
        out: dict = {"docs": len(docs), "queries": len(queries), "retrievers": {}}
        result["datasets"][name] = out
        runs: dict[str, Run] = {}
        secs: dict[str, float] = {}

        if "bm25" not in args.skip:
            try:
                from attnsift.retrieval.bm25 import BM25Retriever
            except ImportError as exc:  # written in parallel; say so rather than fail
                out["retrievers"]["bm25"] = {"skipped": f"BM25Retriever not importable: {exc}"}
            else:
                t = time.perf_counter()
                bm25 = BM25Retriever.from_corpus(docs)
                build = time.perf_counter() - t
                runs["bm25"], secs["bm25"] = timed_run(bm25, queries)
                p = bm25.save(tmp / f"{name}-bm25")
                out["retrievers"]["bm25"] = {
                    **score(runs["bm25"], ds), "qps": round(len(queries) / secs["bm25"], 1), "build_s": round(build, 1),
                    "index_bytes_per_doc": round(dir_bytes(p) / len(docs), 1),
                    "note": "bm25s, k1=0.9 b=0.4, Porter stemming, English stopwords; index size includes its own stored texts if any",
                }
                log.info("%s bm25 %s", name, out["retrievers"]["bm25"])

        cache = Path(args.cache) / name / args.model.replace("/", "_")
        if "dense" not in args.skip:
            dense = DenseRetriever.from_corpus(docs, encoder=encoder, cache_dir=cache, progress=True)
            runs["dense"], secs["dense"] = timed_run(dense, queries)
            p = dense.save(tmp / f"{name}-dense")
            out["retrievers"]["dense"] = {
                **score(runs["dense"], ds), "qps": round(len(queries) / secs["dense"], 1),
                "index_bytes_per_doc": round(dir_bytes(p) / len(docs), 1), "index": "faiss flat IP (exact)",
                "encode_s_with_cache": round(dense.stats["encode_s"], 1), "index_build_s": round(dense.stats["index_s"], 2),
            }
            log.info("%s dense %s", name, out["retrievers"]["dense"])

        if "late" not in args.skip:
            late = LateInteractionRetriever.from_corpus(docs, encoder=encoder, cache_dir=cache, progress=True, candidate_k=args.candidate_k)
            runs["late"], secs["late"] = timed_run(late, queries)
            p = late.save(tmp / f"{name}-late")
            bpd = late.index.bytes_per_doc()
            out["retrievers"]["late"] = {
                **score(runs["late"], ds), "qps": round(len(queries) / secs["late"], 2),
                "index_bytes_per_doc": round(dir_bytes(p) / len(docs), 1),
                "token_vectors_bytes_per_doc": round(bpd["vectors"], 1), "ann_bytes_per_doc": round(bpd["ann"], 1),
                "tokens_per_doc": round(bpd["tokens_per_doc"], 1), "ann": late.index.ann.info(),
                "candidate_k": args.candidate_k, "index_build_s": round(late.stats["index_s"], 1),
            }
            log.info("%s late %s", name, out["retrievers"]["late"])
            del late

        if "hybrid" not in args.skip and "bm25" in runs and "dense" in runs:
            for method in ("rrf", "minmax"):
                t = time.perf_counter()
                fused = Run(
                    [
                        (reciprocal_rank_fusion([runs["bm25"][q.id], runs["dense"][q.id]], k=60) if method == "rrf"
                         else score_fusion([runs["bm25"][q.id], runs["dense"][q.id]], normalization="minmax")).top(100)
                        for q in queries
                    ],
                    name=f"hybrid-{method}",
                )
                fuse_s = time.perf_counter() - t
                total = secs["bm25"] + secs["dense"] + fuse_s
                out["retrievers"][f"hybrid_{method}"] = {
                    **score(fused, ds), "qps": round(len(queries) / total, 1),
                    "note": "BM25 top-100 + dense top-100, " + ("RRF k=60" if method == "rrf" else "min-max score fusion, equal weights"),
                }
                log.info("%s hybrid %s %s", name, method, out["retrievers"][f"hybrid_{method}"])

    # Encoding throughput on fresh (uncached) passages, longest-first batching as in from_corpus.
    ds = load_dataset(args.datasets[0])
    sample = [d.contents for _, d in zip(range(args.throughput_docs), ds.corpus.iter_documents())]
    t = time.perf_counter()
    encoder.encode_documents(sample)
    dt_enc = time.perf_counter() - t
    t = time.perf_counter()
    encoder.encode_queries([q.text for q in list(ds.queries.values())[:256]])
    dt_q = time.perf_counter() - t
    result["encoding"] = {
        "passages_per_s": round(len(sample) / dt_enc, 1), "sample": f"first {len(sample)} {args.datasets[0]} passages (max 256 tokens)",
        "queries_per_s": round(min(256, len(ds.queries)) / dt_q, 1),
    }
    log.info("encoding %s", result["encoding"])

    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    from attnsift.io import atomic_write_json, atomic_write_text

    atomic_write_json(out_path.with_suffix(".json"), result)
    lines = [
        "# First-stage retrieval: BM25, dense, late interaction, hybrid",
        "",
        f"- command: `{result['command']}`",
        f"- date: {result['date']}",
        f"- machine: {result['machine']}",
        f"- encoder: {encoder.name} (dim {encoder.dim}, max {encoder.max_length} tokens, {encoder.pooling} pooling, normalised)",
        f"- encoding throughput: {result['encoding']['passages_per_s']} passages/s, {result['encoding']['queries_per_s']} queries/s ({result['encoding']['sample']})",
        "",
        "| data set | retriever | nDCG@10 | R@100 | queries/s | index bytes/doc |",
        "|---|---|---|---|---|---|",
    ]
    for name, d in result["datasets"].items():
        for r, v in d["retrievers"].items():
            if "skipped" in v:
                lines.append(f"| {name} | {r} | skipped: {v['skipped']} | | | |")
            else:
                lines.append(f"| {name} | {r} | {v['nDCG@10']:.4f} | {v['R@100']:.4f} | {v['qps']} | {v.get('index_bytes_per_doc', '-')} |")
    lines += ["", "Details (JSON): " + out_path.with_suffix(".json").name, ""]
    atomic_write_text(out_path.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
