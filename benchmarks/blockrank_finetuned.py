"""Issue 5's quality table: fine-tuned BlockRank against zero-shot BlockRank, ICR and BM25 on the same queries.

    # 1. fine-tune on NFCorpus train only (the documented CPU configuration, ~50 min at 1 thread)
    attnsift train blockrank --dataset nfcorpus --split train --max-queries 200 --candidates 10 \
        --block-tokens 96 --max-words 150 --threads 1 --out runs/br
    # 2. one BlockRank pass per query storing every layer's per-head block scores (resumable)
    python benchmarks/icr_heads_collect.py --reranker blockrank --model runs/br/model --name blockrank-ft \
        nfcorpus:dev:160 scifact:test:100 nfcorpus:test dl19:test
    #    (and the same for the zero-shot model and ICR, without --name; see icr_heads.py)
    # 3. this script
    python benchmarks/blockrank_finetuned.py --finetuned lr3e-6=blockrank-ft-a lr3e-5=blockrank-ft-b \
        --tests scifact:test:100 nfcorpus:test dl19:test --out benchmarks/results/blockrank_finetuned

Rows: BM25 order; ICR as published (all heads, masked N/A calibration); zero-shot BlockRank at the trained
layer; each fine-tuned model at the layer it was trained on (no selection at all), at the layer best on the
held-out split, and fused with BM25 (weight chosen on the held-out split). Which fine-tuned model is
"the" result is decided on the held-out split (NFCorpus dev), never on the test sets.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from icr_heads import METRICS, fused, load, mean_ndcg, stamp, tune_fusion, write_results  # noqa: E402

from attnsift.eval.headsel import first_stage_as_run, first_stage_ndcg, ndcg10, scores_run, selection_scores  # noqa: E402
from attnsift.eval.metrics import evaluate  # noqa: E402


def layer_scorer(layer: int, num_heads: int):
    heads = [(layer, h) for h in range(num_heads)]
    return lambda judged: selection_scores(judged, heads, "raw", "sum")


def parse_set(item: str) -> tuple[str, str, int | None]:
    name, _, rest = item.partition(":")
    split, _, limit = rest.partition(":")
    return name, split or "test", int(limit) if limit else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--finetuned", nargs="+", required=True, help="label=features-name of each fine-tuned model")
    ap.add_argument("--zero-shot", default="blockrank-smollm2-135m", help="features name of the zero-shot model")
    ap.add_argument("--icr", default="smollm2-135m", help="features name of the ICR collection ('' to leave out)")
    ap.add_argument("--dev", default="nfcorpus:dev:160", help="held-out split: dataset:split[:first n]")
    ap.add_argument("--tests", nargs="+", default=["scifact:test:100", "nfcorpus:test", "dl19:test"])
    ap.add_argument("--layer", type=int, default=15, help="the layer the models were fine-tuned at")
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--max-words", type=int, default=100)
    ap.add_argument("--trained", default="", help="how the models were trained (recorded in the results)")
    ap.add_argument("--out", default="benchmarks/results/blockrank_finetuned")
    args = ap.parse_args()
    models = dict(item.split("=", 1) for item in args.finetuned)

    # Held-out split: every choice (which run, which layer, which fusion weight) is made here.
    dname, dsplit, dlimit = parse_set(args.dev)
    held: dict[str, Any] = {}
    for label, slug in {"zero-shot": args.zero_shot, **models}.items():
        _, dev = load(dname, dsplit, slug, args.top_k, args.max_words, dlimit)
        dev = [j for j in dev if len(j.f.doc_ids) >= args.top_k]  # full lists, as for the profiles
        L, H = dev[0].f.raw.shape[:2]
        curve = [mean_ndcg(layer_scorer(layer, H)(dev), dev) for layer in range(L)]
        best = int(max(range(L), key=lambda layer: (round(curve[layer], 10), -layer)))
        w, x = tune_fusion(layer_scorer(args.layer, H), dev, "interp")
        held[label] = {"slug": slug, "queries": len(dev), "curve": curve, "best_layer": best, "num_heads": H,
                       "fusion_weight": w, "fusion_ndcg": x, "first_stage": first_stage_ndcg(dev)}
        print(f"held-out {label}: layer {args.layer} {curve[args.layer]:.4f}, best layer {best} {curve[best]:.4f}, "
              f"fused w={w:.2f} {x:.4f}", flush=True)
    chosen = max(models, key=lambda m: held[m]["curve"][args.layer])

    systems: list[tuple[str, Any, str]] = []
    zs = held["zero-shot"]
    systems.append((f"BlockRank zero-shot, layer {args.layer}", ("zero-shot", layer_scorer(args.layer, zs["num_heads"])),
                    f"held-out {zs['curve'][args.layer]:.4f}"))
    for label in models:
        h = held[label]
        tag = " (chosen on held-out)" if label == chosen and len(models) > 1 else ""
        systems.append((f"**BlockRank fine-tuned {label}**{tag}, layer {args.layer} (trained layer)",
                        (label, layer_scorer(args.layer, h["num_heads"])), f"held-out {h['curve'][args.layer]:.4f}"))
        systems.append((f"BlockRank fine-tuned {label}, best held-out layer {h['best_layer']}",
                        (label, layer_scorer(h["best_layer"], h["num_heads"])),
                        f"held-out {h['curve'][h['best_layer']]:.4f}"))
        systems.append((f"BlockRank fine-tuned {label}, layer {args.layer} + BM25 fusion (interp, w={h['fusion_weight']:.2f})",
                        (label, fused(layer_scorer(args.layer, h["num_heads"]), "interp", h["fusion_weight"])),
                        f"held-out {h['fusion_ndcg']:.4f}"))

    results: dict[str, Any] = {"held_out": {"split": args.dev, **held}, "chosen": chosen, "layer": args.layer,
                               "trained": args.trained, "sets": {}}
    for item in args.tests:
        name, split, limit = parse_set(item)
        per_model = {label: load(name, split, slug, args.top_k, args.max_words, limit)
                     for label, slug in {"zero-shot": args.zero_shot, **models}.items()}
        ds, judged0 = per_model["zero-shot"]
        order = [j.f.qid for j in judged0]
        for label, (_, judged) in per_model.items():
            if [j.f.qid for j in judged] != order or any(a.f.doc_ids != b.f.doc_ids for a, b in zip(judged, judged0)):
                raise SystemExit(f"{item}: the {label} features hold other queries or candidates than the zero-shot ones")
        judged_ids = [q for q in ds.queries if ds.qrels.get(q)]
        base = evaluate(first_stage_as_run(judged0), ds.qrels, METRICS, rel_level=ds.rel_level, name="BM25",
                        queries=judged_ids)
        rows = [{"system": "BM25 (first stage order)", "chosen": "-", **{m: base[m] for m in METRICS}}]
        reps = {}

        def row(label: str, how: str, judged: list, scores: list[np.ndarray]) -> None:
            rep = evaluate(scores_run(judged, scores, label), ds.qrels, METRICS, rel_level=ds.rel_level, name=label,
                           queries=judged_ids)
            reps[label] = rep
            c = base.compare(rep)["nDCG@10"]
            rows.append({"system": label, "chosen": how, **{m: rep[m] for m in METRICS}, "diff": c.diff, "p": c.p})

        # Reference point: the candidates in random order (permutation-invariant scores carry no BM25 order).
        rng = np.random.default_rng(0)
        rand = [float(np.mean([ndcg10(rng.permutation(len(j.f.doc_ids)).astype(np.float64), j) for _ in range(100)]))
                for j in judged0]
        rows.append({"system": "random order of the BM25 top-k (mean of 100 shuffles)", "chosen": "-",
                     "nDCG@10": float(np.sum(rand)) / max(1, len(judged_ids)), "MRR@10": float("nan")})
        if args.icr:
            _, ij = load(name, split, args.icr, args.top_k, args.max_words, limit)
            if [j.f.qid for j in ij] != order:
                raise SystemExit(f"{item}: the ICR features hold other queries than the BlockRank ones")
            row("ICR, all heads, masked N/A (published recipe)", "published recipe", ij,
                [np.asarray(j.f.icr_masked, dtype=np.float64) for j in ij])
        for label, (model_label, scorer), how in systems:
            row(label, how, per_model[model_label][1], scorer(per_model[model_label][1]))
        # Fine-tuned (chosen) against zero-shot at the same layer, paired.
        zs_label, ft_label = systems[0][0], next(s[0] for s in systems if s[0].startswith(f"**BlockRank fine-tuned {chosen}**"))
        c = reps[zs_label].compare(reps[ft_label])["nDCG@10"]
        results["sets"][item] = {"queries": len(judged_ids), "rows": rows,
                                 "finetuned_vs_zero_shot": {"diff": c.diff, "p": c.p}}
        print(item, len(judged_ids), "queries", flush=True)
        for r in rows:
            print(f"  {r['nDCG@10']:.4f}  {r.get('diff', 0):+.4f}  {r['system']}")
        print(f"  fine-tuned {chosen} - zero-shot: {c.diff:+.4f} (p={c.p:.3g})")
    stamp(results)
    write_results(args.out, results, lambda: markdown(results, args))


def markdown(results: dict, args: argparse.Namespace) -> str:
    sets = list(results["sets"])
    held = results["held_out"]
    lines = ["# BlockRank fine-tuned on NFCorpus train vs zero-shot, ICR and BM25 (SmolLM2-135M, issue 5)", "",
             f"Command: `{results['command']}`  ",
             f"Machine: {results['machine']}; {results['date']}  ",
             f"Training: {results['trained'] or '(see the script docstring)'}  ",
             f"Test sets: BM25 top-{args.top_k}, {args.max_words}-word documents; SciFact and DL19 are out of domain "
             "(training saw NFCorpus train only).  ",
             f"Held-out split for every choice: {held['split']} (full top-{args.top_k} lists). Fine-tuned run chosen "
             f"there: **{results['chosen']}**.", "",
             "Held-out nDCG@10 per model (the choice of run, layer and fusion weight):", "",
             "| model | queries | BM25 | trained layer | best layer | fused (w) |", "|---|---|---|---|---|---|"]
    layer = results["layer"]
    for label, h in held.items():
        if not isinstance(h, dict):
            continue
        lines.append(f"| {label} | {h['queries']} | {h['first_stage']:.4f} | {h['curve'][layer]:.4f} (layer {layer}) | "
                     f"{h['curve'][h['best_layer']]:.4f} (layer {h['best_layer']}) | {h['fusion_ndcg']:.4f} "
                     f"(w={h['fusion_weight']:.2f}) |")
    lines += ["", "nDCG@10 (difference to BM25; * paired t-test p < 0.05):", "",
              "| system | chosen on held-out | " + " | ".join(f"{s} ({results['sets'][s]['queries']} q)" for s in sets) + " |",
              "|---|---|" + "---|" * len(sets)]
    labels = [r["system"] for r in results["sets"][sets[0]]["rows"]]
    for i, label in enumerate(labels):
        cells = []
        for s in sets:
            r = results["sets"][s]["rows"][i]
            cells.append(f"{r['nDCG@10']:.4f}" + (f" ({r['diff']:+.4f}{'*' if r['p'] < 0.05 else ''})" if "diff" in r else ""))
        lines.append(f"| {label} | {results['sets'][sets[0]]['rows'][i]['chosen']} | " + " | ".join(cells) + " |")
    lines += ["", f"Fine-tuned ({results['chosen']}) minus zero-shot at layer {layer}, paired: " +
              "; ".join(f"{s}: {results['sets'][s]['finetuned_vs_zero_shot']['diff']:+.4f} "
                        f"(p={results['sets'][s]['finetuned_vs_zero_shot']['p']:.3g})" for s in sets), "",
              "MRR@10:", "", "| system | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for i, label in enumerate(labels):
        if not label.startswith("random"):
            lines.append(f"| {label} | " + " | ".join(f"{results['sets'][s]['rows'][i]['MRR@10']:.4f}" for s in sets) + " |")
    lines += ["", "Held-out layer curves (nDCG@10 per layer, 0-based):", ""]
    for label, h in held.items():
        if isinstance(h, dict):
            lines.append(f"- {label}: " + " ".join(f"{x:.3f}" for x in h["curve"]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
