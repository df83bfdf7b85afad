"""ICR on CPU in float32, bfloat16 and int8 dynamic quantisation: speed and nDCG@10 side by side.

    ATTNSIFT_DATA=/work/shared/data python benchmarks/icr_cpu_dtypes.py --speed-queries 3 --quality-queries 30 \
        --json benchmarks/results/icr_cpu_dtypes.json

SciFact (test split, first queries in file order), BM25 top ``--depth`` (20) candidates, documents cut at
``--max-words`` (100 words: ``make run``'s settings), SmolLM2-135M (``smollm2-135m``):

- ``float32``: the model as attnsift loads it on CPU;
- ``bfloat16``: the same weights cast (``model.to(torch.bfloat16)``), ICR's attention rows in bfloat16;
- ``int8``: ``torch.ao.quantization.quantize_dynamic`` over every ``nn.Linear`` (int8 weights, activations
  quantised per call), attention in float32.

Speed: each variant's ``ICRReranker.score`` on the same lists, interleaved (variant order rotates per query), after
one warm-up; both wall seconds and the process's CPU seconds (``time.process_time``) are kept, since the CPU may
be shared with other work (CPU seconds are less moved by other processes; the load average is printed). Quality:
nDCG@10 of each variant's reranking of the same BM25 top-``depth`` over ``--quality-queries`` queries (BM25's
top 100 below it, as ``make run``), and the largest score difference from float32.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time


def variants(model, names):
    import torch

    out = {}
    for name in names:
        if name == "float32":
            out[name] = model
        elif name == "bfloat16":
            out[name] = copy.deepcopy(model).to(torch.bfloat16)
        elif name == "int8":
            out[name] = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
        else:
            raise SystemExit(f"unknown variant {name!r}: float32, bfloat16 or int8")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speed-queries", type=int, default=3)
    ap.add_argument("--quality-queries", type=int, default=30)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--max-words", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--variants", nargs="+", default=["float32", "bfloat16", "int8"])
    ap.add_argument("--quality-variants", nargs="+", default=None, help="default: --variants")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import warnings

    import numpy as np
    import torch
    import transformers

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    from attnsift.eval.datasets import load_dataset
    from attnsift.eval.metrics import evaluate
    from attnsift.pipeline import attach_texts
    from attnsift.registry import build_retriever
    from attnsift.rerank.icr import ICRConfig, ICRReranker, MassCache
    from attnsift.rerank.llm import load_causal_lm
    from attnsift.types import Run

    if args.threads:
        torch.set_num_threads(args.threads)
    n = max(args.speed_queries, args.quality_queries)
    ds = load_dataset("scifact").subset(max_queries=n)
    bm25 = build_retriever("bm25", ds.corpus.iter_documents(), progress=False)
    first = bm25.retrieve_batch(list(ds.queries.values()), k=100)
    first = attach_texts(first, ds.corpus, depth=args.depth, progress=False)
    model, tok = load_causal_lm(args.model, device="cpu", dtype=torch.float32)
    model.eval()
    models = variants(model, args.variants)
    rrs = {k: ICRReranker(m, tokenizer=tok, config=ICRConfig(max_words=args.max_words)) for k, m in models.items()}
    header = {"torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "model": args.model,
              "depth": args.depth, "max_words": args.max_words}
    print("#", header, flush=True)

    speed = []
    qids = list(first)[: args.speed_queries]
    names = list(rrs)
    for i, qid in enumerate(["warm-up"] + qids):
        rk = first[qids[0] if qid == "warm-up" else qid].top(args.depth)
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order:
            best_wall, best_cpu = float("inf"), float("inf")
            for _ in range(args.repeats):
                rrs[name].mass_cache = MassCache()
                w, c = time.perf_counter(), time.process_time()
                rrs[name].score(rk)
                best_wall, best_cpu = min(best_wall, time.perf_counter() - w), min(best_cpu, time.process_time() - c)
            if qid != "warm-up":
                row = {"query": qid, "variant": name, "wall_s": round(best_wall, 3), "cpu_s": round(best_cpu, 3),
                       "load": round(os.getloadavg()[0], 2)}
                speed.append(row)
                print(row, flush=True)

    quality = {}
    qvars = args.quality_variants or names
    qq = list(first)[: args.quality_queries]
    base_scores: dict[str, list[float]] = {}
    for name in qvars:
        rr = rrs[name]
        ranked, diffs, t0 = [], [], time.perf_counter()
        for qid in qq:
            rk = first[qid]
            head = rk.top(args.depth)
            scores = list(rr.score(head))
            if name == "float32":
                base_scores[qid] = scores
            elif qid in base_scores:
                diffs.append(float(np.abs(np.array(scores) - np.array(base_scores[qid])).max()))
            ranked.append(rr.rerank(rk, args.depth))
        report = evaluate(Run(ranked, name=name), ds.qrels, ["nDCG@10"], rel_level=getattr(ds, "rel_level", 1))
        quality[name] = {"nDCG@10": round(float(report.aggregate["nDCG@10"]), 4), "queries": len(qq),
                         "seconds": round(time.perf_counter() - t0, 1),
                         "max_score_diff_vs_float32": round(max(diffs), 4) if diffs else None}
        print(name, quality[name], flush=True)

    print("\n| variant | median wall s/list | median CPU s/list | CPU vs float32 | nDCG@10 | max score diff |")
    print("|---|---|---|---|---|---|")
    med = {v: (statistics.median(r["wall_s"] for r in speed if r["variant"] == v),
               statistics.median(r["cpu_s"] for r in speed if r["variant"] == v)) for v in names}
    for v in names:
        q = quality.get(v, {})
        print(f"| {v} | {med[v][0]:.2f} | {med[v][1]:.2f} | {med[v][1] / med['float32'][1]:.2f}x | "
              f"{q.get('nDCG@10', '-')} | {q.get('max_score_diff_vs_float32', '-')} |")
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"header": header, "speed": speed, "quality": quality}, f, indent=1)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
