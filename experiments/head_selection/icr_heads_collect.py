"""Collect per-head ICR document masses (issue 7) for the held-out split and the test sets.

    python benchmarks/icr_heads_collect.py nfcorpus:dev dl19:test scifact:test nfcorpus:test
    python benchmarks/icr_heads_collect.py --reranker blockrank --model runs/br/model --name blockrank-ft nfcorpus:dev:160
    python benchmarks/icr_heads_collect.py --forward nfcorpus:dev:160 dl19:test   # -> smollm2-135m-fwd_...
    python benchmarks/icr_heads_collect.py --model gemma3-270m --shard 0/2 nfcorpus:test:160 &   # two cores:
    python benchmarks/icr_heads_collect.py --model gemma3-270m --shard 1/2 nfcorpus:test:160     # one shard each

One ICR pass per query (SmolLM2-135M, all 30 layers x 9 heads, BM25 top-20, 100-word documents);
what `attnsift analyze heads` does for one data set, here for several in a row. Resumable.
``--forward`` puts the candidates in first-stage order in the prompt (ICR's default is the reverse, top-1
nearest the query); the two collections together give `orders=2` (position debiasing by permutation)
to benchmarks/icr_heads.py.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from attnsift.bench.quality import attach_texts, first_stage_run
from attnsift.eval.datasets import load_dataset
from attnsift.analysis.heads import collect_head_masses, features_folder
from attnsift.bench.specs import SystemSpec
from attnsift.rerank.icr import ICRReranker
from attnsift.types import Run
from icr_heads import parse_set

ROOT = Path(os.environ.get("ATTNSIFT_CACHE") or Path.home() / ".cache" / "attnsift") / "heads"


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 0 <= K < N."""
    k, sep, n = text.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
        raise SystemExit(f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. 0/2 and 1/2 for two processes")
    return int(k), int(n)


def take_shard(run: Run, k: int, n: int) -> Run:
    """The K-th of N disjoint interleaved shards of a run (query order and run name kept); together they cover it."""
    return Run((rk for i, rk in enumerate(run.values()) if i % n == k), name=run.name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sets", nargs="+", help="dataset:split[:max_queries] (max_queries: the first n queries)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--reranker", default="icr", choices=("icr", "blockrank"))
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--max-words", type=int, default=100)
    ap.add_argument("--root", default=str(ROOT))
    ap.add_argument("--name", default=None,
                    help="the features' model name in the folder (default: the model, with 'blockrank-' in front for "
                         "BlockRank); give one when --model is a folder, e.g. a fine-tuned model")
    ap.add_argument("--shard", default=None, metavar="K/N",
                    help="only every N-th query from the K-th (0-based): run N processes with K = 0..N-1 on one "
                         "collection to use N cores (each query is stored in its own file)")
    ap.add_argument("--forward", action="store_true",
                    help="ICR only: first-stage order in the prompt (reverse=false); features named <name>-fwd")
    args = ap.parse_args()
    shard = parse_shard(args.shard) if args.shard else None
    logging.basicConfig(level=logging.INFO)
    if args.forward and args.reranker != "icr":
        ap.error("--forward is an ICR option (BlockRank scores do not depend on the order)")
    if args.reranker == "icr":
        rr = ICRReranker(args.model, max_words=args.max_words, window=max(args.top_k, 20), stride=10,
                         reverse=not args.forward)
    else:
        from attnsift.rerank.blockrank import BlockRankReranker

        rr = BlockRankReranker(args.model, max_words=args.max_words)
    for item in args.sets:
        name, split, limit = parse_set(item)
        ds = load_dataset(name, split=split)
        if limit:
            ds = ds.subset(max_queries=limit)
        spec = SystemSpec.parse(f"bm25[top_k={args.top_k}]")
        run, _ = first_stage_run(ds, spec, {})
        if shard is not None:
            run = take_shard(run, *shard)
        run = attach_texts(run, ds, args.top_k)
        model_slug = args.name or (args.model if args.reranker == "icr" else f"blockrank-{args.model}")
        if args.forward:
            model_slug += "-fwd"
        folder = features_folder(args.root, model_slug, name, split, "bm25", args.top_k, args.max_words)
        print(f"{item}: {len(run)} queries -> {folder}", flush=True)
        collect_head_masses(rr, run, folder, top_k=args.top_k, progress=True,
                            meta={"dataset": name, "split": split, "first_stage": "bm25"})


if __name__ == "__main__":
    sys.exit(main())
