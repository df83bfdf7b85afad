"""Apply ICR head profiles to stored head masses collected at another document length (issue 7).

    python benchmarks/icr_profiles_cross.py \
        --profile rerank/profiles/icr-smollm2-135m.json \
        --profile benchmarks/results/icr_heads_dev_variants/smollm2-135m-w300.json \
        --max-words 100 300 --sets nfcorpus:dev:160 scifact:test nfcorpus:test dl19:test \
        --out benchmarks/results/icr_heads_w300/cross.md

A profile's heads are chosen on masses of one document length (its ``selected_on.max_words``); the
reranker applies them to whatever length it is given (``max_words``, 300 by default). This scores every
profile's selection on every length's masses, same queries, nDCG@10 with the difference to BM25 (paired
t-test, through the project's evaluation as in ``benchmarks/icr_heads.py``). Held-out rows (``:dev``) are
full lists only, as in the selection; test rows are every judged query (those with an empty BM25 list
count as 0), so BM25 there equals its full-run value.
Needs the masses of ``benchmarks/icr_heads_collect.py [--max-words W]`` for each set and length.
"""
from __future__ import annotations

import argparse
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))


def cross_scores(judged: Sequence, qrels: Mapping, profiles: Mapping[str, Mapping], queries: Sequence[str] | None = None,
                 rel_level: int = 1) -> dict:
    """BM25 and each profile's selection on ``judged`` (one set's stored queries): nDCG@10, difference to BM25
    and the paired t-test p-value, through the project's evaluation (:func:`attnsift.eval.metrics.evaluate`,
    ``Report.compare``) as ``benchmarks/icr_heads.py`` does. ``queries``: the query ids averaged over
    (judged queries whose BM25 list is empty count as 0 there); default: the stored ones."""
    from attnsift.analysis.headsel import first_stage_as_run, selection_run
    from attnsift.eval.metrics import evaluate

    queries = list(queries) if queries is not None else [j.f.qid for j in judged]
    base = evaluate(first_stage_as_run(judged), qrels, ["nDCG@10"], rel_level=rel_level, name="BM25", queries=queries)
    out = {"queries": len(queries), "bm25": float(base["nDCG@10"]), "profiles": {}}
    for label, prof in profiles.items():
        sel = prof["selection"]
        rep = evaluate(selection_run(judged, [tuple(h) for h in sel["heads"]], sel["variant"], sel["aggregate"]),
                       qrels, ["nDCG@10"], rel_level=rel_level, name=label, queries=queries)
        c = base.compare(rep)["nDCG@10"]
        out["profiles"][label] = {"ndcg10": float(rep["nDCG@10"]), "delta": float(c.diff), "p": float(c.p)}
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
            ds, judged = load(name, split, args.model, 20, mw, limit)
            if split == "dev":  # the held-out figure of the selection: full lists only
                judged = [j for j in judged if len(j.f.doc_ids) >= 20]
                queries = [j.f.qid for j in judged]
            else:  # as in icr_heads.py: every judged query, those without candidates count as 0
                queries = [q for q in ds.queries if ds.qrels.get(q)]
            rows.append((mw, item, cross_scores(judged, ds.qrels, profiles, queries, ds.rel_level)))
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
    from attnsift.io import atomic_write_json, atomic_write_text

    atomic_write_text(args.out, text)
    atomic_write_json(Path(args.out).with_suffix(".json"), [{"max_words": mw, "set": item, **r} for mw, item, r in rows])
    print(text)


if __name__ == "__main__":
    sys.exit(main())
