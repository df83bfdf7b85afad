"""Apply ICR head profiles to stored head masses collected at another document length (issue 7).

    python benchmarks/icr_profiles_cross.py \
        --profile rerank/profiles/icr-smollm2-135m.json \
        --profile benchmarks/results/icr_heads_dev_variants/smollm2-135m-w300.json \
        --max-words 100 300 --sets nfcorpus:dev:160 scifact:test nfcorpus:test dl19:test \
        --out benchmarks/results/icr_heads_w300/cross.md

A profile's heads are chosen on masses of one document length (its ``selected_on.max_words``); the
reranker applies them to whatever length it is given (``max_words``, 300 by default). This scores every
profile's selection on every length's masses, same queries, nDCG@10 with the difference to BM25 (paired
t-test). Held-out rows (``:dev``) are full lists only, as in the selection; test rows are every stored
query (queries whose BM25 list is empty are not stored, so BM25 here can differ from the full-run value).
Needs the masses of ``benchmarks/icr_heads_collect.py [--max-words W]`` for each set and length.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def cross_scores(judged: Sequence, profiles: Mapping[str, Mapping]) -> dict:
    """BM25 and each profile's selection on ``judged`` (one set's queries): mean nDCG@10, difference to
    BM25 and the paired t-test p-value."""
    from scipy.stats import ttest_rel

    from attnsift.eval.headsel import ndcg10, selection_scores

    bm = np.array([ndcg10(np.asarray(j.f.first_stage), j) for j in judged])
    out = {"queries": len(judged), "bm25": float(bm.mean()), "profiles": {}}
    for label, prof in profiles.items():
        sel = prof["selection"]
        scores = selection_scores(judged, [tuple(h) for h in sel["heads"]], sel["variant"], sel["aggregate"])
        v = np.array([ndcg10(s, j) for s, j in zip(scores, judged)])
        p = float(ttest_rel(v, bm).pvalue) if len(v) > 1 and np.any(v != bm) else 1.0
        out["profiles"][label] = {"ndcg10": float(v.mean()), "delta": float(v.mean() - bm.mean()), "p": p}
    return out


def main() -> None:
    from attnsift.rerank.head_scoring import read_profile
    from icr_heads import load, parse_set

    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", action="append", required=True)
    ap.add_argument("--max-words", type=int, nargs="+", default=[100, 300])
    ap.add_argument("--sets", nargs="+", default=["nfcorpus:dev:160", "scifact:test", "nfcorpus:test", "dl19:test"])
    ap.add_argument("--model", default="smollm2-135m", help="the features' model slug")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    profiles = {}
    for path in args.profile:
        prof = read_profile(path)
        if prof.get("reranker", "icr") != "icr":
            raise SystemExit(f"{path}: an ICR head profile is needed")
        profiles[f"{Path(path).stem} (chosen at {prof.get('selected_on', {}).get('max_words')} words)"] = prof
    rows = []
    for mw in args.max_words:
        for item in args.sets:
            name, split, limit = parse_set(item)
            _, judged = load(name, split, args.model, 20, mw, limit)
            if split == "dev":
                judged = [j for j in judged if len(j.f.doc_ids) >= 20]
            rows.append((mw, item, cross_scores(judged, profiles)))
    labels = list(profiles)
    lines = ["# ICR head profiles applied to masses of another document length", "",
             f"Command: `python {' '.join(sys.argv)}`  ",
             f"Machine: {platform.machine()} {platform.system()}; {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
             "", "nDCG@10 (difference to BM25; * paired t-test p < 0.05):", "",
             "| masses | set | queries | BM25 | " + " | ".join(labels) + " |", "|---" * (4 + len(labels)) + "|"]
    for mw, item, r in rows:
        cells = [f"{r['profiles'][lab]['ndcg10']:.4f} ({r['profiles'][lab]['delta']:+.4f}"
                 f"{'*' if r['profiles'][lab]['p'] < 0.05 else ''})" for lab in labels]
        lines.append(f"| {mw} words | {item} | {r['queries']} | {r['bm25']:.4f} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    from attnsift.io import atomic_file

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(args.out, "w") as fh:
        fh.write(text)
    with atomic_file(Path(args.out).with_suffix(".json"), "w") as fh:
        json.dump([{"max_words": mw, "set": item, **r} for mw, item, r in rows], fh, indent=1)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
