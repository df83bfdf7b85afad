"""BlockRank benchmark: zero-shot quality over BM25 top-k, and cost against ICR as candidates grow.

    python benchmarks/blockrank.py quality --datasets scifact:50 dl19 --top-k 20
    python benchmarks/blockrank.py cost --candidates 20 50 100 --max-words 60 --systems blockrank icr
    python benchmarks/blockrank.py cost --device cuda --candidates 20 50 100   # on a GPU (--device auto: the default)

Quality: BM25 (attnsift's BM25Retriever, k1=0.9 b=0.4, for BEIR sets; the provided BM25 run for DL19),
then BlockRank (SmolLM2-135M-Instruct; float32 on the CPU, bfloat16 on CUDA; ``--device``) over the top-k; nDCG@10 and MRR@10 with
attnsift.eval.metrics.evaluate. Writes benchmarks/results/blockrank_quality.{md,json}.

Cost: every (system, number of candidates) runs in a fresh subprocess on the same SciFact documents
(the BM25 top-N of the first query), after one warm-up call; seconds per query and the peak RSS of the
process (resource.getrusage). Writes benchmarks/results/blockrank_cost.{md,json}.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MACHINE = "shared 2-core CPU, 24 GB RAM, no GPU (about 6 engineers sharing it while this ran)"


def _meta(argv: list[str]) -> dict:
    import torch
    import transformers

    machine = MACHINE if not torch.cuda.is_available() else f"{torch.cuda.get_device_name()} (CUDA), {os.cpu_count()} CPU cores"
    return {"command": "python benchmarks/blockrank.py " + " ".join(argv),
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine,
            "platform": platform.platform(), "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads()}


def first_stage(name: str, n_queries: int | None, k: int):
    """(dataset subset, BM25 Run with documents attached, top-k)."""
    from attnsift.eval.datasets import load_dataset

    ds = load_dataset(name)
    if n_queries:
        ds = ds.subset(max_queries=n_queries)
    if "dl19" in name or "trec-dl" in name:
        run = ds.load_run("bm25")
    else:
        from attnsift.retrieval.bm25 import BM25Retriever

        bm25 = BM25Retriever.from_corpus(ds.corpus.iter_documents())
        run = bm25.retrieve_batch(list(ds.queries.values()), k=k)
    from attnsift.types import Run

    docs = ds.corpus
    run = Run((r.top(k).with_documents(docs) for r in run.values()), name="bm25")
    return ds, run


def quality(args: argparse.Namespace, argv: list[str]) -> None:
    from attnsift.eval.metrics import evaluate
    from attnsift.rerank.blockrank import BlockRankReranker

    rr = BlockRankReranker(args.model, scoring_layer=args.scoring_layer, block_tokens=args.block_tokens,
                           device=args.device)
    rows = []
    for spec in args.datasets:
        name, _, n = spec.partition(":")
        ds, run = first_stage(name, int(n) if n else None, args.top_k)
        t0 = time.perf_counter()
        reranked = rr.rerank_batch(run, progress=True)
        secs = (time.perf_counter() - t0) / max(1, len(run))
        for label, r in (("BM25", run), (f"BlockRank zero-shot (layer {rr.scoring_layer})", reranked)):
            rep = evaluate(r, ds.qrels, metrics=("nDCG@10", "MRR@10"), rel_level=ds.rel_level)
            rows.append({"dataset": name, "queries": len(run), "top_k": args.top_k, "system": label,
                         "nDCG@10": rep.aggregate["nDCG@10"], "MRR@10": rep.aggregate["MRR@10"],
                         "s_per_query": secs if label != "BM25" else None})
            print(rows[-1], flush=True)
    meta = _meta(argv)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "blockrank_quality.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    lines = [f"# BlockRank zero-shot quality ({args.model})", "", f"- command: `{meta['command']}`",
             f"- date: {meta['date']}", f"- machine: {meta['machine']}; torch {meta['torch']}, transformers "
             f"{meta['transformers']}", "", "| data set | queries | top-k | system | nDCG@10 | MRR@10 | s/query |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        s = "" if r["s_per_query"] is None else f"{r['s_per_query']:.2f}"
        lines.append(f"| {r['dataset']} | {r['queries']} | {r['top_k']} | {r['system']} | {r['nDCG@10']:.4f} | "
                     f"{r['MRR@10']:.4f} | {s} |")
    (RESULTS / "blockrank_quality.md").write_text("\n".join(lines) + "\n")


def cost_one(args: argparse.Namespace) -> None:
    """One configuration, in this process: prints a JSON line."""
    import resource

    import torch

    from attnsift.types import Ranking

    ds, run = first_stage("scifact", 1, args.n)
    ranking = next(iter(run.values()))
    ranking = Ranking(ranking.query, ranking.candidates[: args.n])
    if args.system == "blockrank":
        from attnsift.rerank.blockrank import BlockRankReranker

        rr = BlockRankReranker(args.model, max_words=args.max_words, block_tokens=args.block_tokens,
                               device=args.device)
    else:
        from attnsift.rerank.icr import ICRReranker

        rr = ICRReranker(args.model, max_words=args.max_words, device=args.device)
    cuda = rr.device.type == "cuda"
    with torch.no_grad():
        rr.score(Ranking(ranking.query, ranking.candidates[:2]))  # warm-up on a small list (one-time set-up)
        times = []
        for _ in range(args.repeats):
            # A timed repeat must compute, not hit ICR's cache of forward-pass masses.
            if hasattr(rr, "mass_cache"):
                rr.mass_cache.clear()
            if cuda:
                torch.cuda.synchronize(rr.device)
            t0 = time.perf_counter()
            rr.score(ranking)
            if cuda:
                torch.cuda.synchronize(rr.device)
            times.append(time.perf_counter() - t0)
    extra = {}
    if args.system == "blockrank":
        p = rr.prompt(ranking)
        extra = {"tokens": p.num_tokens, "scoring_layer": rr.scoring_layer}
    if cuda:
        extra["peak_cuda_mb"] = torch.cuda.max_memory_allocated(rr.device) / 2**20
    print(json.dumps({"system": args.system, "candidates": len(ranking), "seconds": min(times), "device": str(rr.device),
                      "seconds_all": times, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      **extra}))


def cost(args: argparse.Namespace, argv: list[str]) -> None:
    rows = []
    for system in args.systems:
        for n in args.candidates:
            cmd = [sys.executable, __file__, "cost-one", "--system", system, "--n", str(n), "--model", args.model,
                   "--max-words", str(args.max_words), "--repeats", str(args.repeats), "--device", args.device]
            if args.block_tokens is not None:
                cmd += ["--block-tokens", str(args.block_tokens)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                rows.append({"system": system, "candidates": n, "error": proc.stderr.strip().splitlines()[-1:]})
            else:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    meta = _meta(argv)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "blockrank_cost.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    lines = [f"# BlockRank vs ICR: cost against the number of candidates ({args.model})", "",
             f"- command: `{meta['command']}`", f"- date: {meta['date']}", f"- machine: {meta['machine']}",
             f"- documents: the BM25 top-N of the first SciFact test query, each cut to {args.max_words} words; "
             f"best of {args.repeats} after a 2-candidate warm-up, fresh process per row", "",
             "| system | candidates | prompt tokens | s/query | s per candidate | peak RSS (MB) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['system']} | {r['candidates']} | | error: {r['error']} | | |")
            continue
        lines.append(f"| {r['system']} | {r['candidates']} | {r.get('tokens', '')} | {r['seconds']:.2f} | "
                     f"{r['seconds'] / r['candidates']:.3f} | {r['peak_rss_mb']:.0f} |")
    (RESULTS / "blockrank_cost.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--datasets", nargs="+", default=["scifact:50", "dl19"])
    q.add_argument("--top-k", type=int, default=20)
    q.add_argument("--scoring-layer", type=int, default=None)
    q.add_argument("--block-tokens", type=int, default=384)
    c = sub.add_parser("cost")
    c.add_argument("--candidates", type=int, nargs="+", default=[20, 50, 100])
    c.add_argument("--systems", nargs="+", default=["blockrank", "icr"])
    c1 = sub.add_parser("cost-one")
    c1.add_argument("--system", required=True)
    c1.add_argument("--n", type=int, required=True)
    for p in (c, c1):
        p.add_argument("--max-words", type=int, default=60)
        p.add_argument("--repeats", type=int, default=2)
        p.add_argument("--block-tokens", type=int, default=None)
    for p in (q, c, c1):
        p.add_argument("--model", default="smollm2-135m")
        p.add_argument("--device", default="auto",
                       help="auto (CUDA when available, else the CPU), cpu, cuda or cuda:N [auto]")
    args = ap.parse_args(argv)
    from attnsift.config import resolve_device

    try:
        args.device = str(resolve_device(args.device))  # a device this machine lacks stops here, in one line
    except ValueError as exc:
        ap.error(str(exc))
    if args.cmd == "quality":
        quality(args, argv)
    elif args.cmd == "cost":
        cost(args, argv)
    else:
        cost_one(args)


if __name__ == "__main__":
    os.environ.setdefault("ATTNSIFT_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    main()
