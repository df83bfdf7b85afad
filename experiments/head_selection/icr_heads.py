"""Issue 7's table: every head-selection / calibration / fusion variant on the test sets, chosen on held-out queries.

    # 1. one ICR pass per query, every head's masses stored (resumable; the expensive part)
    python benchmarks/icr_heads_collect.py dl19:test nfcorpus:dev:160 scifact:test nfcorpus:test
    # 2. the selection on held-out queries (NFCorpus dev), written as the model's profile
    attnsift analyze heads --model smollm2-135m --dataset nfcorpus --split dev --max-queries 160 \
        --out rerank/profiles/smollm2-135m.json
    # 3. this script: apply every variant (settings from the held-out queries only) to the test sets
    python benchmarks/icr_heads.py --profile rerank/profiles/smollm2-135m.json \
        --tests scifact:test nfcorpus:test dl19:test --out benchmarks/results/icr_heads

Nothing here looks at test judgements before the settings are fixed: each variant's k, combination and
fusion weight come from the held-out split recorded in the profile.

``--orders 2`` is ICR's ``orders=2`` (position debiasing by permutation) for every row: it also needs the
collection in first-stage prompt order (``icr_heads_collect.py --forward``, held-out split included), and
each system's scores from the two prompt orders are standardised and averaged, as the reranker does. The
settings stay those of the profile (chosen on the held-out split in the default order). One more row selects
heads on the held-out masses averaged over the two orders; it and the CV and in-sample rows score those
averaged masses.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from attnsift.eval.datasets import load_dataset
from attnsift.analysis.heads import features_folder, load_head_masses
from attnsift.analysis.headsel import (W_GRID, Judged, first_stage_as_run, judge, ndcg10, position_prior, ranked_heads,
                                   scores_run, select, selection_scores)
from attnsift.eval.metrics import evaluate
from attnsift.rerank.head_scoring import aggregate, fuse
from attnsift.io import atomic_write_json, atomic_write_text

ROOT = Path(os.environ.get("ATTNSIFT_CACHE") or Path.home() / ".cache" / "attnsift") / "heads"
METRICS = ("nDCG@10", "MRR@10")

Scorer = Callable[[list[Judged]], list[np.ndarray]]


def parse_set(item: str) -> tuple[str, str, int | None]:
    """``dataset[:split[:first n]]`` -> (dataset, split (default test), n or None)."""
    name, _, rest = item.partition(":")
    split, _, limit = rest.partition(":")
    if limit and not limit.isdigit():
        raise SystemExit(f"{item!r}: expected dataset:split[:number of queries], e.g. scifact:test:100")
    return name, split or "test", int(limit) if limit else None


def load(name: str, split: str, model: str, top_k: int, max_words: int, max_queries: int | None = None):
    """``model``: the features' model slug (``smollm2-135m``, or ``blockrank-smollm2-135m``; ``-fwd`` at the end
    for a collection in first-stage prompt order)."""
    ds = load_dataset(name, split=split)
    if max_queries:
        ds = ds.subset(max_queries=max_queries)
    folder = features_folder(ROOT, model, name, split, "bm25", top_k, max_words)
    if model.endswith("-fwd") and not (folder / "meta.json").exists():
        raise SystemExit(f"no first-stage-order collection for {name} {split} ({folder}); run "
                         f"python benchmarks/icr_heads_collect.py --forward {name}:{split}"
                         + (f":{max_queries}" if max_queries else ""))
    collect = ("python benchmarks/icr_heads_collect.py " + ("--forward " if model.endswith("-fwd") else "")
               + (f"--max-words {max_words} " if max_words != 100 else "") + f"{name}:{split}"
               + (f":{max_queries}" if max_queries else ""))
    if not (folder / "meta.json").exists():
        raise SystemExit(f"no head masses for {name} {split} at {max_words} words ({folder}); run {collect}")
    feats = load_head_masses(folder, list(ds.queries))
    stored = {f.qid for f in feats}
    if len(stored) < len(ds.queries):
        # Queries whose BM25 list is empty are never stored; anything else missing is unfinished work.
        from attnsift.bench.quality import first_stage_run
        from attnsift.bench.specs import SystemSpec

        run, _ = first_stage_run(ds, SystemSpec.parse(f"bm25[top_k={top_k}]"), {})
        unfinished = [q for q in ds.queries if q not in stored and q in run and len(run[q]) > 0]
        if unfinished:
            raise SystemExit(f"{name} {split}: {len(unfinished)} queries have no stored masses yet ({folder}); "
                             f"run {collect}")
    return ds, judge(feats, ds.qrels)


def both_orders(rev: list[Judged], fwd: list[Judged]) -> tuple[list[Judged], list[Judged]]:
    """Pair the default-order and first-stage-order collections of the same queries. Returns the
    forward-order list aligned with ``rev`` and the per-head masses averaged over the two orders (ICR's
    masked score: the two orders' scores standardised and averaged, as ``orders=2`` does)."""
    import dataclasses

    by_qid = {j.f.qid: j for j in fwd}
    pairs, avg = [], []
    for j in rev:
        k = by_qid.get(j.f.qid)
        if k is None or k.f.doc_ids != j.f.doc_ids:
            raise SystemExit(f"query {j.f.qid}: the forward-order collection lacks it or holds other candidates; "
                             "run icr_heads_collect.py --forward on the same sets")
        pairs.append(k)
        f = dataclasses.replace(j.f, raw=(j.f.raw + k.f.raw) / 2, na=(j.f.na + k.f.na) / 2,
                                masked=(j.f.masked + k.f.masked) / 2, seconds=j.f.seconds + k.f.seconds,
                                icr_masked=None if j.f.icr_masked is None else
                                aggregate(np.stack([j.f.icr_masked, k.f.icr_masked]).astype(np.float64), "z"))
        avg.append(dataclasses.replace(j, f=f))
    return pairs, avg


def two_orders(scorer: Scorer, partner: dict[int, Judged]) -> Scorer:
    """``orders=2`` for any scorer: its scores in both prompt orders, standardised and averaged."""
    def f(judged: list[Judged]) -> list[np.ndarray]:
        other = scorer([partner[id(j)] for j in judged])
        return [aggregate(np.stack([a, b]).astype(np.float64), "z") for a, b in zip(scorer(judged), other)]

    return f


def mean_ndcg(scores: list[np.ndarray], judged: list[Judged]) -> float:
    return float(np.mean([ndcg10(s, j) for s, j in zip(scores, judged)]))


def fused(base: Scorer, method: str, weight: float) -> Scorer:
    def f(judged: list[Judged]) -> list[np.ndarray]:
        return [fuse(s, np.asarray(j.f.first_stage, dtype=np.float64), weight, method) for s, j in zip(base(judged), judged)]

    return f


def tune_fusion(base: Scorer, dev: list[Judged], method: str) -> tuple[float, float]:
    rows = [(mean_ndcg(fused(base, method, w)(dev), dev), w) for w in W_GRID]
    best = max(rows, key=lambda r: (round(r[0], 10), r[1]))
    return best[1], best[0]


def cv_systems(judged: list[Judged], top_k: int, folds: int = 5, variants: tuple = ("raw", "cal", "masked", "norm", "prior")) -> tuple[list[np.ndarray], list[np.ndarray], list[dict]]:
    """K-fold cross-validation on one query set: each fold's scores come from heads, variant, combination
    and fusion weight selected on the OTHER folds only (full lists, as for the profile). Returns the
    attention scores, the fused scores (both in ``judged`` order) and what each fold chose."""
    import hashlib

    fold_of = [int(hashlib.sha1(j.f.qid.encode()).hexdigest(), 16) % folds for j in judged]
    attn: list = [None] * len(judged)
    fusedv: list = [None] * len(judged)
    chosen = []
    for k in range(folds):
        train = [j for j, f in zip(judged, fold_of) if f != k and len(j.f.doc_ids) >= top_k]
        test_idx = [i for i, f in enumerate(fold_of) if f == k]
        if not test_idx:  # a small set (e.g. 5 queries) can leave a fold empty: nothing to score
            continue
        if not train:
            raise SystemExit(f"cross-validation: no query with a full top-{top_k} list outside fold {k}; "
                             "use a larger query set")
        a = select(train, variants=variants)
        sel, fus = a["selection"], a["fusion"]
        heads = [tuple(h) for h in sel["heads"]]
        prior = position_prior(train)
        part = [judged[i] for i in test_idx]
        sa = selection_scores(part, heads, sel["variant"], sel["aggregate"], prior)
        sf = selection_scores(part, heads, sel["variant"], sel["aggregate"], prior, fus["method"], fus["weight"])
        for i, x, y in zip(test_idx, sa, sf):
            attn[i], fusedv[i] = x, y
        chosen.append({"fold": k, "train_queries": len(train), "test_queries": len(test_idx), "k": sel["k"],
                       "variant": sel["variant"], "aggregate": sel["aggregate"], "fusion": fus["method"],
                       "weight": fus["weight"], "train_ndcg": sel["heldout_ndcg"]})
    return attn, fusedv, chosen


def icr_systems(prof: dict, dev: list[Judged], heads_scorer, all_heads) -> list[tuple[str, Scorer, str]]:
    H = prof["num_heads"]
    systems: list[tuple[str, Scorer, str]] = []
    systems.append(("ICR, all heads, no calibration (raw)", heads_scorer(all_heads, "raw", "sum"), "published recipe"))
    systems.append(("ICR, all heads, N/A calibration", heads_scorer(all_heads, "cal", "sum"), "published recipe"))
    systems.append(("ICR, all heads, masked N/A (paper default)",
                    lambda judged: [np.asarray(j.f.icr_masked, dtype=np.float64) for j in judged], "published recipe"))
    systems.append(("ICR, all heads, normalised then subtracted", heads_scorer(all_heads, "norm", "sum"),
                    "calibration variant"))
    systems.append(("ICR, all heads, position prior subtracted", heads_scorer(all_heads, "prior", "sum"),
                    "prior estimated on held-out queries"))
    # The best single layer (its heads summed), per the held-out layer curve.
    best_layer = max(((v, l, x) for v, ys in prof["per_layer"].items() for l, x in enumerate(ys)), key=lambda t: t[2])
    systems.append((f"one layer: layer {best_layer[1]} ({best_layer[0]})",
                    heads_scorer([(best_layer[1], h) for h in range(H)], best_layer[0], "sum"),
                    f"best layer on held-out ({best_layer[2]:.4f})"))
    # Per variant: its best k heads and combination on the held-out split.
    for v in sorted({r["variant"] for r in prof["table"]}):
        rows = [r for r in prof["table"] if r["variant"] == v]
        r = max(rows, key=lambda r: (round(r["ndcg"], 10), -r["k"]))
        heads = ranked_heads(np.asarray(prof["per_head"][v]))[: r["k"]]
        systems.append((f"top-{r['k']} heads, {v}/{r['aggregate']}", heads_scorer(heads, v, r["aggregate"]),
                        f"held-out {r['ndcg']:.4f}"))
    sel = prof["selection"]
    systems += profile_systems(prof, dev, heads_scorer,
                               f"**profile (heads=auto)**: {sel['k']} heads, {sel['variant']}/{sel['aggregate']}",
                               "**profile + BM25 fusion ({method}, w={w:.2f})**")
    masked = systems[2][1]
    w, x = tune_fusion(masked, dev, "interp")
    systems.append((f"ICR masked N/A + BM25 fusion (interp, w={w:.2f})", fused(masked, "interp", w), f"held-out {x:.4f}"))

    return systems


def blockrank_systems(prof: dict, dev: list[Judged], heads_scorer) -> list[tuple[str, Scorer, str]]:
    L, H = prof["num_layers"], prof["num_heads"]
    mid, auto = L // 2, prof["scoring_layer"]
    curve = prof["per_layer"]["raw"]
    systems: list[tuple[str, Scorer, str]] = [
        (f"BlockRank zero-shot, middle layer {mid} (the default)", heads_scorer([(mid, h) for h in range(H)], "raw", "sum"),
         f"held-out {curve[mid]:.4f}"),
        (f"BlockRank zero-shot, scoring_layer=auto: layer {auto}", heads_scorer([(auto, h) for h in range(H)], "raw", "sum"),
         f"held-out {curve[auto]:.4f}"),
    ]
    sel = prof["selection"]
    return systems + profile_systems(prof, dev, heads_scorer, f"**BlockRank heads=auto**: {sel['k']} heads, {sel['aggregate']}",
                                     "BlockRank heads=auto + BM25 fusion ({method}, w={w:.2f})")


def profile_systems(prof: dict, dev: list[Judged], heads_scorer, label: str, fused_label: str) -> list[tuple[str, Scorer, str]]:
    """The profile's selection, then fused with BM25 by each method at its held-out weight."""
    sel = prof["selection"]
    chosen = heads_scorer([tuple(h) for h in sel["heads"]], sel["variant"], sel["aggregate"])
    out = [(label, chosen, f"held-out {sel['heldout_ndcg']:.4f}")]
    for method in ("interp", "rrf"):
        w, x = tune_fusion(chosen, dev, method)
        out.append((fused_label.format(method=method, w=w), fused(chosen, method, w), f"held-out {x:.4f}"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--tests", nargs="+", default=["scifact:test", "nfcorpus:test", "dl19:test"])
    ap.add_argument("--out", default="benchmarks/results/icr_heads")
    ap.add_argument("--features-model", default=None,
                    help="the features' model name (icr_heads_collect.py --name) when the profile's model is a folder")
    ap.add_argument("--orders", type=int, choices=(1, 2), default=1,
                    help="2: every ICR row with orders=2 (needs the --forward collections, see above)")
    args = ap.parse_args()
    prof = json.loads(Path(args.profile).read_text())
    where = prof["selected_on"]
    kind = prof.get("reranker", "icr")
    top_k, max_words = where["top_k"], where["max_words"]
    model = args.features_model or (prof["model"] if kind == "icr" else f"blockrank-{prof['model']}")
    _, dev = load(where["dataset"], where["split"], model, top_k, max_words, where.get("max_queries"))
    if where.get("full_lists_only"):
        dev = [j for j in dev if len(j.f.doc_ids) >= top_k]
    if len(dev) != where["queries"]:
        raise SystemExit(f"held-out queries: {len(dev)} here, {where['queries']} in the profile; features changed?")
    L, H = prof["num_layers"], prof["num_heads"]
    prior = position_prior(dev)
    all_heads = [(l, h) for l in range(L) for h in range(H)]
    partner: dict[int, Judged] = {}  # orders=2: id of a default-order query -> the same query in forward order
    forward_ids: set[int] = set()
    alive: list[list[Judged]] = []  # keeps every list keyed by id() above alive, so no id is ever reused
    if args.orders == 2:
        if kind != "icr":
            raise SystemExit("--orders 2 is an ICR option (BlockRank scores do not depend on the order)")
        _, dev_fwd = load(where["dataset"], where["split"], model + "-fwd", top_k, max_words, where.get("max_queries"))
        dev_fwd, dev_avg = both_orders(dev, dev_fwd)
        # Held-out selection made on masses averaged over the two orders (an offline variant: the
        # reranker's orders=2 averages standardised scores, for `sum` the same ranking up to scale).
        avg_sel = select(dev_avg)
        asel, afus = avg_sel["selection"], avg_sel["fusion"]
        avg_prior = position_prior(dev_avg)
        partner.update({id(a): b for a, b in zip(dev, dev_fwd)})
        forward_ids.update(id(b) for b in dev_fwd)
        alive += [dev, dev_fwd]
        prior_fwd = position_prior(dev_fwd)

    def heads_scorer(heads, variant, how) -> Scorer:
        def f(judged: list[Judged]) -> list[np.ndarray]:
            p = prior_fwd if judged and id(judged[0]) in forward_ids else prior
            return selection_scores(judged, heads, variant, how, p)

        return f

    systems: list[tuple[str, Scorer, str]] = []  # (label, scorer, how it was chosen)
    if kind == "blockrank":
        systems = blockrank_systems(prof, dev, heads_scorer)
    else:
        systems = icr_systems(prof, dev, heads_scorer, all_heads)
    results: dict[str, Any] = {"profile": args.profile, "reranker": kind, "selected_on": where, "orders": args.orders,
                               "model": prof.get("model"), "features": model, "sets": {}}
    table_sets = []
    for item in args.tests:
        name, split, limit = parse_set(item)
        ds, judged = load(name, split, model, top_k, max_words, limit)
        selectable = judged  # what the CV and in-sample rows select on
        if args.orders == 2:
            fwd, selectable = both_orders(judged, load(name, split, model + "-fwd", top_k, max_words, limit)[1])
            partner.update({id(a): b for a, b in zip(judged, fwd)})
            forward_ids.update(id(b) for b in fwd)
            alive += [judged, fwd]
        judged_ids = [q for q in ds.queries if ds.qrels.get(q)]  # queries without candidates count as 0
        base = evaluate(first_stage_as_run(judged), ds.qrels, METRICS, rel_level=ds.rel_level, name="BM25",
                        queries=judged_ids)
        rows = [{"system": "BM25 (first stage order)", "chosen": "-", **{m: base[m] for m in METRICS}}]

        def row(label: str, chosen_how: str, scores: list[np.ndarray], **extra: Any) -> None:
            rep = evaluate(scores_run(judged, scores, label), ds.qrels, METRICS, rel_level=ds.rel_level, name=label,
                           queries=judged_ids)
            c = base.compare(rep)["nDCG@10"]
            rows.append({"system": label, "chosen": chosen_how, **{m: rep[m] for m in METRICS}, "diff": c.diff,
                         "p": c.p, **extra})

        for label, scorer, how in systems:
            row(label, how, (two_orders(scorer, partner) if args.orders == 2 else scorer)(judged))
        if args.orders == 2:
            heads = [tuple(h) for h in asel["heads"]]
            row(f"heads chosen on held-out masses averaged over both orders: {asel['k']} heads, "
                f"{asel['variant']}/{asel['aggregate']}", f"held-out {asel['heldout_ndcg']:.4f}",
                selection_scores(selectable, heads, asel["variant"], asel["aggregate"], avg_prior))
            row(f"the same + BM25 fusion ({afus['method']}, w={afus['weight']:.2f})", f"held-out {afus['heldout_ndcg']:.4f}",
                selection_scores(selectable, heads, asel["variant"], asel["aggregate"], avg_prior, afus["method"],
                                 afus["weight"]))
        attn, fusedv, chosen = cv_systems(selectable, top_k, variants=("raw",) if kind == "blockrank" else
                                          ("raw", "cal", "masked", "norm", "prior"))
        row("**5-fold CV on this set**: selected heads", "other folds of the same set", attn)
        row("**5-fold CV on this set**: selected heads + BM25 fusion", "other folds of the same set", fusedv)
        # Diagnostic, not a result: the same selection made on this test set itself (in-sample). It bounds
        # what choosing heads can reach with this model here; the gap to the CV row is selection noise.
        full = [j for j in selectable if len(j.f.doc_ids) >= top_k]
        oracle = select(full, variants=("raw",) if kind == "blockrank" else ("raw", "cal", "masked", "norm", "prior"))
        osel = oracle["selection"]
        oscores = selection_scores(selectable, [tuple(h) for h in osel["heads"]], osel["variant"], osel["aggregate"],
                                   position_prior(full))
        row("(diagnostic) heads selected on this test set itself", "in-sample upper bound, not a result", oscores,
            selection=f"{osel['k']} heads {osel['variant']}/{osel['aggregate']}")
        results["sets"][item] = {"queries": len(judged_ids), "rows": rows, "cv_folds": chosen}
        table_sets.append(item)
        print(item, len(judged), "queries", flush=True)
        for r in rows:
            print(f"  {r['nDCG@10']:.4f}  {r.get('diff', 0):+.4f}  {r['system']}")
    stamp(results)
    write_results(args.out, results, lambda: markdown(results, table_sets, systems))


def stamp(results: dict) -> None:
    """Record the machine, the date and the exact command in ``results``."""
    results["machine"] = f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip()
    results["date"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    results["command"] = shlex.join([Path(sys.executable).name, *sys.argv])


def write_results(folder: str | Path, results: dict, markdown_text: Callable[[], str]) -> None:
    """results.json and results.md in ``folder``, each written atomically; the table is printed."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", markdown_text())
    print((out / "results.md").read_text())


def markdown(results: dict, sets: list[str], systems: list) -> str:
    where = results["selected_on"]
    model = results.get("model") or "smollm2-135m"
    model = {"smollm2-135m": "SmolLM2-135M", "gemma3-270m": "Gemma 3 270M"}.get(model, model)
    lines = [
        (f"# Head selection, calibration and fusion for ICR with {model} (issue 7)"
         + (": every row with orders=2 (both prompt orders)" if results.get("orders") == 2 else "")
         if results.get("reranker") != "blockrank"
         else f"# BlockRank zero-shot with {model}: scoring layer and heads chosen on held-out queries (issues 5, 7)"),
        "",
        f"Command: `{results['command']}`  ",
        "Inputs: the per-query head masses (`python benchmarks/icr_heads_collect.py [--reranker blockrank] "
        "<dataset:split[:n]> ...`) and the profile (`attnsift analyze heads ... --out <profile>`); the full "
        "sequence is in this script's docstring.  ",
        f"Machine: {results['machine']}; {results['date']}  ",
        f"Settings chosen on held-out queries only: **{where['dataset']} {where['split']}** "
        f"({where['queries']} queries{', the first ' + str(where['max_queries']) if where.get('max_queries') else ''}), "
        f"BM25 top-{where['top_k']}, {where['max_words']}-word documents. Test sets: "
        + ("full query sets" if not any(parse_set(s)[2] for s in sets) else "as named (dataset:split[:first n queries])")
        + f", BM25 top-{where['top_k']} "
        "reranked (documents below 20 keep BM25 order, so nDCG@10 of BM25 equals its full-run value).",
        "",
        *([] if not str(results.get("features", "")).endswith("-fwd") else [
            "Prompt order: first-stage order (top-1 first, farthest from the query; `reverse=false`). Heads, variants "
            "and combinations as the profile chose them in ICR's default (reverse) order, with their held-out values "
            "there; fusion weights tuned on the held-out queries in this order.", ""]),
        *([] if results.get("orders") != 2 else [
            "orders=2: each row's scores from both prompt orders (reverse first-stage order, ICR's default, and "
            "first-stage order), standardised per query and averaged, as `orders=2` does in the reranker; settings "
            "as chosen on the held-out split in the default order. The rows 'heads chosen on held-out masses averaged "
            "over both orders' and the CV and in-sample rows select on per-head masses averaged over the two orders "
            "(offline arithmetic: the reranker's orders=2 standardises each order's scores before averaging).", ""]),
        "nDCG@10 (difference to BM25; * paired t-test p < 0.05):",
        "",
        "| system | chosen on held-out | " + " | ".join(f"{s} ({results['sets'][s]['queries']} q)" for s in sets) + " |",
        "|---|---|" + "---|" * len(sets),
    ]
    labels = [r["system"] for r in results["sets"][sets[0]]["rows"]]
    for i, label in enumerate(labels):
        cells = []
        for s in sets:
            r = results["sets"][s]["rows"][i]
            if "diff" in r:
                cells.append(f"{r['nDCG@10']:.4f} ({r['diff']:+.4f}{'*' if r['p'] < 0.05 else ''})")
            else:
                cells.append(f"{r['nDCG@10']:.4f}")
        lines.append(f"| {label} | {results['sets'][sets[0]]['rows'][i]['chosen']} | " + " | ".join(cells) + " |")
    lines += ["", "What each cross-validation fold chose (on the other four folds):", ""]
    for s in sets:
        folds = results["sets"][s].get("cv_folds", [])
        lines.append(f"- {s}: " + "; ".join(f"{f['k']} heads {f['variant']}/{f['aggregate']}, {f['fusion']} w={f['weight']:.2f}"
                                            for f in folds))
    lines += ["", "In-sample diagnostic row (selected on the test set itself; an upper bound, not a result): " +
              "; ".join(f"{s}: {results['sets'][s]['rows'][-1].get('selection', '')}" for s in sets), ""]
    lines += ["", "MRR@10:", "", "| system | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for i, label in enumerate(labels):
        lines.append(f"| {label} | " + " | ".join(f"{results['sets'][s]['rows'][i]['MRR@10']:.4f}" for s in sets) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
