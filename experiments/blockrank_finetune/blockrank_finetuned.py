"""Issue 5's quality table: fine-tuned BlockRank against zero-shot BlockRank, ICR and BM25 on the same queries.

    # 1. fine-tune on NFCorpus train only (the documented CPU configuration: ~55 min at 1 thread)
    attnsift train blockrank --dataset nfcorpus --split train --max-queries 200 --candidates 10 \
        --block-tokens 96 --max-words 150 --threads 1 --lr 3e-5 --warmup-steps 10 --out runs/br-lr3e-5
    # 2. rerank BM25 top-20 with the CLI (early exit at the trained layer), one run file per model and set,
    #    named RUNS/<label>.<dataset>-<split>[<first n>].trec, e.g.
    attnsift rerank --dataset nfcorpus --split dev --max-queries 160 --retriever bm25 --reranker blockrank \
        --model runs/br-lr3e-5/model --top-k 20 --option max_words=100 --option scoring_layer=15 \
        --save-run RUNS/ft-lr3e-5.nfcorpus-dev160.trec
    attnsift rerank --dataset dl19 --run bm25 ... --save-run RUNS/ft-lr3e-5.dl19-test.trec
    # 3. this script
    python benchmarks/blockrank_finetuned.py --runs RUNS --finetuned ft-lr3e-5 ft-lr3e-6 \
        --tests scifact:test:100 nfcorpus:test dl19:test --out benchmarks/results/blockrank_finetuned

BM25, the random-order reference and ICR (all heads, masked N/A: the published recipe) come from the stored
per-query features of `icr_heads_collect.py` on the same BM25 top-20 lists; zero-shot BlockRank comes from
RUNS/zero-shot.<set>.trec when present, else from the stored BlockRank features at the same layer (the
same numbers: tested to 1e-5). Every run is checked to rerank exactly the stored candidates. Which fine-tuned
model is "the" result is decided on the held-out split (NFCorpus dev, full top-20 lists), never on a test set.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from icr_heads import METRICS, load, parse_set, stamp, write_results  # noqa: E402

from attnsift.analysis.headsel import first_stage_as_run, ndcg10, scores_run, selection_scores  # noqa: E402
from attnsift.eval.metrics import evaluate  # noqa: E402
from attnsift.trec import read_run  # noqa: E402
from attnsift.types import Run  # noqa: E402


def set_slug(item: str) -> str:
    name, split, limit = parse_set(item)
    return f"{name}-{split}{limit or ''}"


def layer_run(judged: list, layer: int, name: str) -> Run:
    H = judged[0].f.raw.shape[1]
    return scores_run(judged, selection_scores(judged, [(layer, h) for h in range(H)], "raw", "sum"), name)


def run_file(runs: Path, label: str, item: str, ds: Any, judged: list) -> Run | None:
    path = runs / f"{label}.{set_slug(item)}.trec"
    if not path.exists():
        return None
    run = read_run(path, queries=ds.queries, skip_unknown=True, name=label)
    for j in judged:  # the same candidates as the stored features: a permutation of the BM25 top-k
        got = run.get(j.f.qid)
        if got is None or {c.doc_id for c in got.candidates[: len(j.f.doc_ids)]} != set(j.f.doc_ids):
            raise SystemExit(f"{path}: query {j.f.qid} does not rerank the stored BM25 top-{len(j.f.doc_ids)}")
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, required=True, help="folder of <label>.<set>.trec run files")
    ap.add_argument("--finetuned", nargs="+", required=True, help="labels of the fine-tuned models' run files")
    ap.add_argument("--zero-shot", default="blockrank-smollm2-135m", help="features name of the zero-shot model")
    ap.add_argument("--icr", default="smollm2-135m", help="features name of the ICR collection")
    ap.add_argument("--dev", default="nfcorpus:dev:160", help="held-out split: dataset:split[:first n]")
    ap.add_argument("--tests", nargs="+", default=["scifact:test:100", "nfcorpus:test", "dl19:test"])
    ap.add_argument("--layer", type=int, default=15, help="the layer the models were fine-tuned and read at")
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--max-words", type=int, default=100)
    ap.add_argument("--trained", default="", help="how the models were trained (recorded in the results)")
    ap.add_argument("--out", default="benchmarks/results/blockrank_finetuned")
    args = ap.parse_args()

    def system_runs(item: str) -> tuple[Any, list, dict[str, Run]]:
        name, split, limit = parse_set(item)
        ds, judged = load(name, split, args.icr, args.top_k, args.max_words, limit)
        zero = run_file(args.runs, "zero-shot", item, ds, judged)
        if zero is None:
            _, zj = load(name, split, args.zero_shot, args.top_k, args.max_words, limit)
            if [j.f.qid for j in zj] != [j.f.qid for j in judged] or any(a.f.doc_ids != b.f.doc_ids
                                                                         for a, b in zip(zj, judged)):
                raise SystemExit(f"{item}: the zero-shot BlockRank features hold other queries or candidates than ICR's")
            zero = layer_run(zj, args.layer, "zero-shot")
        runs = {"zero-shot": zero}
        for label in args.finetuned:
            r = run_file(args.runs, label, item, ds, judged)
            if r is not None:
                runs[label] = r
        return ds, judged, runs

    # Held-out split: the choice of the fine-tuned run.
    ds, dev, dev_runs = system_runs(args.dev)
    full = [j.f.qid for j in dev if len(j.f.doc_ids) >= args.top_k]
    held = {label: evaluate(r, ds.qrels, ("nDCG@10",), rel_level=ds.rel_level, queries=full)["nDCG@10"]
            for label, r in dev_runs.items()}
    held["BM25"] = evaluate(first_stage_as_run([j for j in dev if j.f.qid in set(full)]), ds.qrels, ("nDCG@10",),
                            rel_level=ds.rel_level, queries=full)["nDCG@10"]
    missing = [m for m in args.finetuned if m not in held]
    if missing:
        raise SystemExit(f"no held-out run for {missing} in {args.runs} ({set_slug(args.dev)})")
    chosen = max(args.finetuned, key=lambda m: held[m])
    print("held-out", {k: round(v, 4) for k, v in held.items()}, "chosen", chosen, flush=True)

    results: dict[str, Any] = {"held_out": {"split": args.dev, "queries": len(full), "ndcg10": held}, "chosen": chosen,
                               "layer": args.layer, "trained": args.trained, "sets": {}}
    for item in args.tests:
        ds, judged, runs = system_runs(item)
        judged_ids = [q for q in ds.queries if ds.qrels.get(q)]
        base = evaluate(first_stage_as_run(judged), ds.qrels, METRICS, rel_level=ds.rel_level, name="BM25",
                        queries=judged_ids)
        rows = [{"system": "BM25 (first stage order)", **{m: base[m] for m in METRICS}}]
        # Reference point: the candidates in random order (permutation-invariant scores carry no BM25 order).
        rng = np.random.default_rng(0)
        rand = [float(np.mean([ndcg10(rng.permutation(len(j.f.doc_ids)).astype(np.float64), j) for _ in range(100)]))
                for j in judged]
        rows.append({"system": "random order of the BM25 top-k (mean of 100 shuffles)",
                     "nDCG@10": float(np.sum(rand)) / max(1, len(judged_ids)), "MRR@10": float("nan")})
        reps = {}

        def row(label: str, run: Run) -> None:
            rep = evaluate(run, ds.qrels, METRICS, rel_level=ds.rel_level, name=label, queries=judged_ids)
            reps[label] = rep
            c = base.compare(rep)["nDCG@10"]
            rows.append({"system": label, **{m: rep[m] for m in METRICS}, "diff": c.diff, "p": c.p})

        row("ICR, all heads, masked N/A (published recipe)",
            scores_run(judged, [np.asarray(j.f.icr_masked, dtype=np.float64) for j in judged], "icr"))
        row(f"BlockRank zero-shot, layer {args.layer}", runs["zero-shot"])
        for label in args.finetuned:
            if label in runs:
                tag = " (chosen on held-out)" if label == chosen and len(args.finetuned) > 1 else ""
                row(f"**BlockRank fine-tuned {label}**{tag}, layer {args.layer}", runs[label])
        entry: dict[str, Any] = {"queries": len(judged_ids), "rows": rows}
        ft = next((r["system"] for r in rows if r["system"].startswith(f"**BlockRank fine-tuned {chosen}**")), None)
        if ft is not None:
            c = reps[f"BlockRank zero-shot, layer {args.layer}"].compare(reps[ft])["nDCG@10"]
            entry["finetuned_vs_zero_shot"] = {"diff": c.diff, "p": c.p}
        results["sets"][item] = entry
        print(item, len(judged_ids), "queries", flush=True)
        for r in rows:
            print(f"  {r['nDCG@10']:.4f}  {r.get('diff', 0):+.4f}  {r['system']}")
    stamp(results)
    write_results(args.out, results, lambda: markdown(results, args))


def markdown(results: dict, args: argparse.Namespace) -> str:
    sets = list(results["sets"])
    held = results["held_out"]
    layer = results["layer"]
    lines = ["# BlockRank fine-tuned on NFCorpus train vs zero-shot, ICR and BM25 (SmolLM2-135M, issue 5)", "",
             f"Command: `{results['command']}`  ",
             f"Machine: {results['machine']}; {results['date']}  ",
             f"Training: {results['trained'] or '(see the script docstring)'}  ",
             f"Test sets: BM25 top-{args.top_k} reranked, {args.max_words}-word documents, BlockRank read at layer {layer} "
             "(early exit); SciFact and DL19 are out of domain (training saw NFCorpus train only).  ",
             "Run files (one per model and set): `attnsift rerank --dataset D [--split S --max-queries N] "
             "--retriever bm25 (DL19: --run bm25) --reranker blockrank --model <train --out>/model --top-k 20 "
             f"--option max_words={args.max_words} --option scoring_layer={layer} --save-run RUNS/<label>.<set>.trec` "
             "(zero-shot: --model smollm2-135m).  ",
             f"Held-out split for the choice of fine-tuned run: {held['split']} ({held['queries']} queries with full "
             f"top-{args.top_k} lists); chosen there: **{results['chosen']}**.", "",
             "Held-out nDCG@10: " + ", ".join(f"{k} {v:.4f}" for k, v in held["ndcg10"].items()), "",
             "nDCG@10 (difference to BM25; * paired t-test p < 0.05):", "",
             "| system | " + " | ".join(f"{s} ({results['sets'][s]['queries']} q)" for s in sets) + " |",
             "|---|" + "---|" * len(sets)]
    labels: list[str] = []
    for s in sets:
        labels += [r["system"] for r in results["sets"][s]["rows"] if r["system"] not in labels]

    def cell(s: str, label: str, metric: str, with_diff: bool) -> str:
        r = next((r for r in results["sets"][s]["rows"] if r["system"] == label), None)
        if r is None:
            return "not run"
        out = f"{r[metric]:.4f}"
        if with_diff and "diff" in r:
            out += f" ({r['diff']:+.4f}{'*' if r['p'] < 0.05 else ''})"
        return out

    for label in labels:
        lines.append(f"| {label} | " + " | ".join(cell(s, label, "nDCG@10", True) for s in sets) + " |")
    lines += ["", f"Fine-tuned ({results['chosen']}) minus zero-shot at layer {layer}, paired: " +
              "; ".join(f"{s}: {e['finetuned_vs_zero_shot']['diff']:+.4f} (p={e['finetuned_vs_zero_shot']['p']:.3g})"
                        for s, e in results["sets"].items() if "finetuned_vs_zero_shot" in e), "",
              "MRR@10:", "", "| system | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for label in labels:
        if not label.startswith("random"):
            lines.append(f"| {label} | " + " | ".join(cell(s, label, "MRR@10", False) for s in sets) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
