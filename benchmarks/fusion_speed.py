"""Hybrid retrieval at the speed of its parts: BM25 + dense fused, against the two retrievers alone.

On SciFact's 300 test queries (top-100 from each part, top-100 fused), in one process, interleaved
rounds (the median of ``--repeats``):

- ``bm25``, ``dense`` (MiniLM, exact inner product): each retriever's ``retrieve_batch`` alone;
- ``hybrid rrf`` / ``hybrid score-minmax`` / ``hybrid score-zscore``: ``FusionRetriever`` over both
  (both stages retrieved in one batch each, then the vectorised fusion);
- ``fusion only``: fusing the 300 queries' stored part rankings, the vectorised code against the
  per-candidate loops it replaced (copied below as the baseline), whose results must be equal.

Times are given for ``retrieve_batch`` (what evaluation reads: ``to_dict()``) and with every fused
candidate and its document read (what a reranker reads), since rankings make their Candidate
objects only when read.

    ATTNSIFT_DATA=/work/shared/data .venv/bin/python benchmarks/fusion_speed.py

The dense part's corpus encoding comes from the encoding cache (the first run encodes SciFact once).
Writes benchmarks/results/fusion_speed.{md,json}.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: the VM is shared


def old_fuse(rankings, method: str, weights, rrf_k: float, normalization: str, k: int):
    """The per-candidate fusion of retrieval/fusion.py before the columnar path (the baseline)."""
    import math

    from attnsift.types import Candidate, Ranking

    docs = {}
    for r in rankings:
        for c in r.candidates:
            if docs.get(c.doc_id) is None:
                docs[c.doc_id] = c.document
    total = dict.fromkeys(docs, 0.0)
    if method == "rrf":
        for wi, r in zip(weights, rankings):
            for rank, c in enumerate(r.candidates, start=1):
                total[c.doc_id] += wi / (rrf_k + rank)
    else:
        for wi, r in zip(weights, rankings):
            s = [c.score for c in r.candidates]
            if not s:
                normed, fill = [], 0.0
            elif normalization == "minmax":
                lo, hi = min(s), max(s)
                normed, fill = ([1.0] * len(s), 0.0) if hi - lo <= 0 else ([(x - lo) / (hi - lo) for x in s], 0.0)
            elif normalization == "zscore":
                mean = sum(s) / len(s)
                std = math.sqrt(sum((x - mean) ** 2 for x in s) / len(s))
                if std <= 0:
                    normed, fill = [0.0] * len(s), 0.0
                else:
                    normed = [(x - mean) / std for x in s]
                    fill = min(normed)
            else:
                normed, fill = s, min(s)
            got = {c.doc_id: v for c, v in zip(r.candidates, normed)}
            for d in total:
                total[d] += wi * got.get(d, fill)
    return Ranking(rankings[0].query, tuple(Candidate(d, s, docs[d]) for d, s in total.items())).top(k)


def touch(run) -> int:
    """Read every candidate and its document (what a reranker does)."""
    n = 0
    for r in run.values():
        for c in r.candidates:
            n += c.document is not None
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="scifact")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "fusion_speed"))
    a = p.parse_args()

    import platform
    from importlib.metadata import version

    import torch

    from attnsift.eval.datasets import load_dataset
    from attnsift.io import atomic_write_json, atomic_write_text
    from attnsift.retrieval.bm25 import BM25Retriever
    from attnsift.retrieval.dense import DenseRetriever
    from attnsift.retrieval.fusion import FusionRetriever
    from attnsift.types import Ranking, Run

    load_start = [round(v, 2) for v in os.getloadavg()]
    ds = load_dataset(a.dataset)
    qs = list(ds.queries.values()) if hasattr(ds.queries, "values") else list(ds.queries)
    bm25 = BM25Retriever.from_corpus(ds.corpus, progress=False)
    dense = DenseRetriever.from_corpus(ds.corpus, encoder="minilm", device="cpu", progress=True)
    systems = {
        "bm25": bm25,
        "dense": dense,
        "hybrid rrf": FusionRetriever([bm25, dense], method="rrf", depth=a.k),
        "hybrid score-minmax": FusionRetriever([bm25, dense], method="score", normalization="minmax", depth=a.k),
        "hybrid score-zscore": FusionRetriever([bm25, dense], method="score", normalization="zscore", depth=a.k),
    }
    for s in systems.values():  # warm-up: weights paged in, lazy tables made
        touch(s.retrieve_batch(qs[:8], k=a.k))
    times: dict[str, list[float]] = {n: [] for n in systems}
    times.update({f"{n} + candidates read": [] for n in systems})
    runs: dict[str, Run] = {}
    for rep in range(a.repeats):
        for name, s in systems.items():
            t = time.perf_counter()
            run = s.retrieve_batch(qs, k=a.k)
            times[name].append(time.perf_counter() - t)
            touch(run)
            times[f"{name} + candidates read"].append(time.perf_counter() - t)
            runs[name] = run
        print(f"round {rep + 1}: " + ", ".join(f"{n} {v[-1]:.3f}s" for n, v in times.items()), file=sys.stderr, flush=True)
    # fusion alone, on the same part rankings: vectorised against the loops it replaced
    parts = [[runs[n][q.id] if q.id in runs[n] else Ranking(q, ()) for n in ("bm25", "dense")] for q in qs]
    fusion: dict[str, dict] = {}
    for name in ("hybrid rrf", "hybrid score-minmax", "hybrid score-zscore"):
        f = systems[name]
        new_t, old_t = [], []
        for _ in range(a.repeats):
            fresh = [[Ranking(q, tuple(r.candidates)) for r in pr] for q, pr in zip(qs, parts)]  # eager, as before
            t = time.perf_counter()
            new = [f.fuse(pr, k=a.k) for pr in fresh]
            new_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            old = [old_fuse(pr, f.method, f.weights, f.rrf_k, f.normalization, a.k) for pr in fresh]
            old_t.append(time.perf_counter() - t)
        same = all(x.doc_ids == y.doc_ids and [c.score for c in x] == [c.score for c in y] and
                   [c.document for c in x] == [c.document for c in y] for x, y in zip(new, old))
        same_run = runs[name].to_dict() == {q.id: o.scores() for q, o in zip(qs, old)}
        fusion[name] = {"vectorised_s": statistics.median(new_t), "old_loops_s": statistics.median(old_t),
                        "same_results": bool(same and same_run)}
    med = {n: statistics.median(v) for n, v in times.items()}
    res = {
        "command": " ".join([".venv/bin/python", "benchmarks/fusion_speed.py", *sys.argv[1:]]),
        "machine": f"{os.cpu_count()}-core {platform.machine()} VM (AMD EPYC), no GPU, torch {torch.__version__} "
                   f"({torch.get_num_threads()} threads), faiss-cpu {version('faiss-cpu')}, bm25s {version('bm25s')}",
        "load_start": load_start, "load_end": [round(v, 2) for v in os.getloadavg()],
        "dataset": a.dataset, "queries": len(qs), "k": a.k, "repeats": a.repeats, "times_s": times, "median_s": med,
        "fusion_only": fusion, "lazy_rankings": hasattr(Ranking, "presorted"),
    }
    sum_parts = med["bm25"] + med["dense"]
    sum_parts_read = med["bm25 + candidates read"] + med["dense + candidates read"]
    L = ["# Hybrid (BM25 + dense) against its two parts alone", "", f"Command: `{res['command']}`", "",
         f"Machine: {res['machine']}; load average {load_start} at start, {res['load_end']} at the end "
         "(a VM shared with other workers).", "",
         f"{a.dataset}, {len(qs)} queries, top-{a.k} from each part and top-{a.k} fused; median of {a.repeats} "
         "interleaved rounds, seconds for all queries. Rankings that make their candidates only when read "
         f"(`Ranking.presorted`): {'yes' if res['lazy_rankings'] else 'no (every stage builds its Candidates)'}.", "",
         "| system | retrieve_batch (s) | + every candidate and document read (s) | vs bm25 + dense |",
         "|---|---:|---:|---:|"]
    for n in systems:
        ratio = f"{med[n] / sum_parts:.3f}x / {med[n + ' + candidates read'] / sum_parts_read:.3f}x" if n.startswith("hybrid") else ""
        L.append(f"| {n} | {med[n]:.3f} | {med[n + ' + candidates read']:.3f} | {ratio} |")
    L += ["", f"bm25 + dense run one after the other: {sum_parts:.3f} s ({sum_parts_read:.3f} s with candidates read).", "",
          f"Fusion alone ({len(qs)} queries, the stored part rankings; median of {a.repeats}):", "",
          "| method | vectorised (s) | per-candidate loops before (s) | speed-up | same results |", "|---|---:|---:|---:|---|"]
    for n, f in fusion.items():
        L.append(f"| {n} | {f['vectorised_s']:.4f} | {f['old_loops_s']:.4f} | {f['old_loops_s'] / f['vectorised_s']:.1f}x | "
                 f"{f['same_results']} |")
    out = Path(a.out)
    atomic_write_json(out.with_suffix(".json"), res)
    atomic_write_text(out.with_suffix(".md"), "\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
