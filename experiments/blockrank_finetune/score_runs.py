"""Score saved run files on one query set: what the hand-written result notes cite.

    # BlockRank final_offset runs on the NFCorpus dev queries with a full BM25 top-20 (blockrank_offset.md)
    python benchmarks/score_runs.py nfcorpus:dev:160 RUNS/zs-off512.nfcorpus-dev160.trec \
        RUNS/zs-off2048.nfcorpus-dev160.trec --full-lists 20
    # a random order of a first stage's top-100 (quality_top100_blockrank_scifact/results.md)
    python benchmarks/score_runs.py scifact:test:50 \
        --random-of benchmarks/results/quality_top100_blockrank_scifact/scifact/bm25/run.trec --top-k 100

``--full-lists K`` keeps the judged queries for which every given run lists at least K candidates (the
first stage found K documents), the held-out set of ``blockrank_finetuned.py``; without it, every judged
query counts (a query missing from a run scores 0). ``--random-of RUN`` adds the expected nDCG@10 / MRR@10
of RUN's top-k in a random order (mean over seeded shuffles; documents below k keep RUN's order).
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from icr_heads import parse_set  # noqa: E402

from attnsift.eval.datasets import load_dataset  # noqa: E402
from attnsift.eval.metrics import evaluate  # noqa: E402
from attnsift.trec import read_run  # noqa: E402
from attnsift.types import Candidate, Ranking, Run  # noqa: E402

METRICS = ("nDCG@10", "MRR@10")


def shuffled(run: Run, top_k: int, seed: int) -> Run:
    """``run`` with each ranking's top ``top_k`` in a random order (seeded per query)."""
    out = []
    for qid, rk in run.items():
        ids = [c.doc_id for c in rk.candidates]
        head = ids[:top_k]
        random.Random(f"{seed}|{qid}").shuffle(head)
        order = head + ids[top_k:]
        out.append(Ranking(rk.query, tuple(Candidate(d, float(len(order) - i)) for i, d in enumerate(order))))
    return Run(out, name=f"random{seed}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("set", help="dataset:split[:first n queries], e.g. nfcorpus:dev:160")
    ap.add_argument("runs", nargs="*", type=Path, help="TREC run files")
    ap.add_argument("--full-lists", type=int, default=None, metavar="K",
                    help="only queries with at least K candidates in every run")
    ap.add_argument("--random-of", type=Path, default=None, help="a run whose top-k is shuffled as a reference")
    ap.add_argument("--top-k", type=int, default=20, help="how many of --random-of's candidates are shuffled")
    ap.add_argument("--shuffles", type=int, default=200)
    args = ap.parse_args()
    if not args.runs and args.random_of is None:
        ap.error("give run files, --random-of RUN, or both")
    for p in [*args.runs, *([args.random_of] if args.random_of else [])]:
        if not p.is_file():
            ap.error(f"run file {p} does not exist")
    name, split, limit = parse_set(args.set)
    ds = load_dataset(name, split=split)
    if limit:
        ds = ds.subset(max_queries=limit)
    runs = {p.name: read_run(p, queries=ds.queries, skip_unknown=True, name=p.stem) for p in args.runs}
    queries = [q for q in ds.queries if ds.qrels.get(q)]
    if args.full_lists is not None:
        queries = [q for q in queries if all(q in r and len(r[q]) >= args.full_lists for r in runs.values())]
        if not queries:
            raise SystemExit(f"no judged query has {args.full_lists} candidates in every run")
    print(f"{args.set}: {len(queries)} judged queries" + (f" with at least {args.full_lists} candidates in every run"
                                                         if args.full_lists is not None else ""))
    print("\n| run | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS))
    for label, run in runs.items():
        rep = evaluate(run, ds.qrels, METRICS, rel_level=ds.rel_level, queries=queries)
        print(f"| {label} | " + " | ".join(f"{rep[m]:.4f}" for m in METRICS) + " |")
    if args.random_of is not None:
        base = read_run(args.random_of, queries=ds.queries, skip_unknown=True)
        sums = dict.fromkeys(METRICS, 0.0)
        for s in range(args.shuffles):
            rep = evaluate(shuffled(base, args.top_k, s), ds.qrels, METRICS, rel_level=ds.rel_level, queries=queries)
            for m in METRICS:
                sums[m] += rep[m] / args.shuffles
        print(f"| random order of {args.random_of.name}'s top-{args.top_k} ({args.shuffles} shuffles) | "
              + " | ".join(f"{sums[m]:.4f}" for m in METRICS) + " |")


if __name__ == "__main__":
    main()
