"""Long documents: ICR with documents cut to ``max_words`` against ICR with passage scoring (MaxP).

    ATTNSIFT_DATA=/work/shared/data python benchmarks/long_documents.py --queries 20 --depth 10

The set: NFCorpus test queries (file order) whose BM25 top-``depth`` holds at least one abstract of
``--min-words`` (300) words or more, the first ``--queries`` of them. Each system reranks the same BM25
top-``depth`` (``Pipeline`` over the cached BM25 run, SmolLM2-135M, float32 on CPU):

- ``bm25``: the first stage alone;
- ``icr cut``: ICR as it ships, documents cut to ``max_words`` (300) words;
- ``icr passages``: ``passages=max`` (windows of ``passage_words`` every ``passage_stride`` words, each
  document scored by its best window).

Per system: nDCG@10 (ir_measures, NFCorpus test qrels), reranking seconds per query (the scoring's
compute, as ``Pipeline`` reports it) and ``reranker.truncation`` (what was cut). Writes
``benchmarks/results/long_documents.json``; ``long_documents.md`` is the write-up of it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _machine() -> str:
    import os

    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, transformers {transformers.__version__}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--min-words", type=int, default=300)
    ap.add_argument("--max-words", type=int, default=300)
    ap.add_argument("--passage-words", type=int, default=150)
    ap.add_argument("--passage-stride", type=int, default=75)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", type=Path, default=RESULTS / "long_documents.json")
    args = ap.parse_args(argv)

    from attnsift import BM25Retriever, ICRReranker, Pipeline, evaluate, load_dataset
    from attnsift.types import Run

    ds = load_dataset("nfcorpus")
    words = {d.id: len(d.text.split()) for d in ds.corpus.iter_documents()}
    bm25 = BM25Retriever.from_corpus(ds.corpus.iter_documents())
    judged = [q for q in ds.queries.values() if q.id in ds.qrels]
    first = bm25.retrieve_batch(judged, k=args.depth)
    chosen = [q for q in judged if any(words[c.doc_id] >= args.min_words for c in first[q.id].candidates)]
    chosen = chosen[: args.queries]
    base = Run((first[q.id] for q in chosen), name="bm25")
    long_share = sum(words[c.doc_id] >= args.min_words for r in base.values() for c in r.candidates)
    print(f"{len(chosen)} queries of {len(judged)} judged; {long_share} of {len(chosen) * args.depth} candidates "
          f"have {args.min_words}+ words", flush=True)

    rows = [{"system": "bm25", "nDCG@10": evaluate(base, ds.qrels, metrics=["nDCG@10"])["nDCG@10"],
             "seconds_per_query": 0.0}]
    icr = ICRReranker(args.model, max_words=args.max_words)
    systems = [(f"icr cut (max_words={args.max_words})", icr),
               (f"icr passages (passages=max, passage_words={args.passage_words}, passage_stride={args.passage_stride})",
                icr.with_options(max_words=None, passages="max", passage_words=args.passage_words,
                                 passage_stride=args.passage_stride))]
    for label, rr in systems:
        pipe = Pipeline(base, rr, first_stage_k=args.depth, depth=args.depth, corpus=ds.corpus)
        t0 = time.perf_counter()
        results = list(pipe.stream(chosen, progress=False))
        wall = time.perf_counter() - t0
        run = Run((r.ranking for r in results), name=label)
        rows.append({"system": label, "nDCG@10": evaluate(run, ds.qrels, metrics=["nDCG@10"])["nDCG@10"],
                     "seconds_per_query": sum(r.rerank_seconds for r in results) / len(results),
                     "wall_seconds": wall, "truncation": rr.truncation})
        print(json.dumps(rows[-1]), flush=True)
    out = {"date": datetime.date.today().isoformat(), "machine": _machine(), "args": {k: str(v) for k, v in vars(args).items()},
           "queries": [q.id for q in chosen], "long_candidates": long_share, "rows": rows}
    from attnsift.io import atomic_write_json

    atomic_write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
