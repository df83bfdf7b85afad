"""Why does N/A calibration hurt a small model? One ICR pass per query, every scoring read from it.

    python benchmarks/icr_calibration.py --dataset scifact --queries 30 --top-k 20 --max-words 100

For the first N test queries (file order), BM25 top-k (the provided run on DL19), one ICR pass gives
per document: the real query's attention mass (raw), the "N/A" query's mass (na), their difference
(calibrated), the paper's 2-sigma-masked difference (masked_na). The script scores each as a ranking
(nDCG@10), plus "na only" (rank by the N/A mass: pure position/content prior), "normalised"
(each query's mass normalised to a distribution over the documents before subtracting), and reports
- the mean Spearman correlation between raw and na document masses (near 1: the raw signal is mostly
  the prior that calibration subtracts),
- the mean raw and na mass by prompt position (1 = first in the prompt = lowest first-stage rank,
  k = last = the first-stage top-1, nearest the query).
Writes benchmarks/results/icr_calibration_<dataset>.{md,json}.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--max-words", type=int, default=100)
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()

    from attnsift.bench.quality import attach_texts, first_stage_run
    from attnsift.eval.datasets import load_dataset
    from attnsift.eval.metrics import evaluate
    from attnsift.bench.specs import SystemSpec
    from attnsift.rerank.icr import ICRReranker
    from attnsift.types import Candidate, Ranking, Run

    ds = load_dataset(args.dataset).subset(max_queries=args.queries)
    first, _ = first_stage_run(ds, SystemSpec.parse(f"bm25[top_k={args.top_k}]"), {})
    first = attach_texts(first.top(args.top_k), ds, args.top_k)
    icr = ICRReranker(args.model, max_words=args.max_words)
    variants = ("bm25", "raw", "na_only", "calibrated", "masked_na", "normalised")
    runs: dict[str, list[Ranking]] = {v: [] for v in variants}
    corr, pos_raw, pos_na = [], np.zeros(args.top_k), np.zeros(args.top_k)
    n_full = 0
    t0 = time.perf_counter()
    for q in ds.queries.values():
        head = first[q.id]
        d = icr.score_details(head)
        raw, na = np.array(d.raw), np.array(d.na)
        norm = raw / raw.sum() - na / na.sum()
        scores = {"bm25": [c.score for c in head], "raw": raw, "na_only": na, "calibrated": np.array(d.calibrated),
                  "masked_na": np.array(d.masked), "normalised": norm}
        for v in variants:
            runs[v].append(Ranking(q, tuple(Candidate(c.doc_id, float(s)) for c, s in zip(head.candidates, scores[v]))))
        corr.append(spearman(raw, na))
        if len(head) == args.top_k:
            # candidate i (first-stage rank i+1) sits at prompt position k - i (reverse order)
            pos_raw += raw[::-1]
            pos_na += na[::-1]
            n_full += 1
    secs = time.perf_counter() - t0
    q_ids = list(ds.queries)
    results = {}
    for v in variants:
        rep = evaluate(Run(runs[v], name=v), ds.qrels, metrics=["nDCG@10", "MRR@10"], rel_level=ds.rel_level, queries=q_ids)
        results[v] = rep.aggregate
    out = {
        "command": f"python benchmarks/icr_calibration.py --dataset {args.dataset} --queries {args.queries} "
                   f"--top-k {args.top_k} --max-words {args.max_words} --model {args.model}",
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "queries": len(q_ids), "seconds_per_query": secs / max(len(q_ids), 1), "results": results,
        "mean_spearman_raw_vs_na": float(np.nanmean(corr)),
        "mass_by_prompt_position": {"raw": (pos_raw / max(n_full, 1)).tolist(), "na": (pos_na / max(n_full, 1)).tolist()},
    }
    res_dir = HERE / "results"
    from attnsift.io import atomic_write_json, atomic_write_text

    atomic_write_json(res_dir / f"icr_calibration_{args.dataset}.json", out)
    lines = [f"# ICR calibration study: {args.dataset}", "", f"Command: `{out['command']}`", "",
             f"{out['date']}; {out['machine']}; {len(q_ids)} queries (first N, file order); BM25 top-{args.top_k}; "
             f"documents cut to {args.max_words} words; one ICR pass per query ({out['seconds_per_query']:.1f} s/query).", "",
             "| scoring | nDCG@10 | MRR@10 |", "|---|---|---|"]
    for v in variants:
        lines.append(f"| {v} | {results[v]['nDCG@10']:.4f} | {results[v]['MRR@10']:.4f} |")
    lines += ["", f"Mean Spearman correlation between the real query's and the N/A query's document masses: "
              f"{out['mean_spearman_raw_vs_na']:.3f}.", "",
              "Mean attention mass by prompt position (1 = first in the prompt = first-stage rank k; "
              f"{args.top_k} = last = first-stage top-1, nearest the query):", "",
              "| position | " + " | ".join(str(i + 1) for i in range(args.top_k)) + " |",
              "|---|" + "---|" * args.top_k,
              "| raw | " + " | ".join(f"{x:.2f}" for x in out["mass_by_prompt_position"]["raw"]) + " |",
              "| N/A | " + " | ".join(f"{x:.2f}" for x in out["mass_by_prompt_position"]["na"]) + " |", ""]
    atomic_write_text(res_dir / f"icr_calibration_{args.dataset}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
