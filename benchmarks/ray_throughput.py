"""ICR reranking throughput on 2 Ray workers (1 thread each) against 1 local process (2 threads), and
Ray's overhead on a BM25-only run (issue 22, item 6).

    ATTNSIFT_DATA=/work/shared/data .venv/bin/python benchmarks/ray_throughput.py \
        --queries 6 --depth 20 --max-words 100 --repeats 2 --json benchmarks/results/ray.json

SciFact, BM25 (bm25s over the corpus) top ``--depth``, ICR with SmolLM2-135M (``max_words``), the first
``--queries`` test queries. Per repeat, interleaved: (a) the local pipeline with torch at 2 threads and
the model already loaded (what a long local run does per query), (b) the same pipeline on a
:class:`~attnsift.engines.ray.RayEngine` with 2 actors of 1 CPU and 1 torch thread each: its end-to-end
wall (the actor pool starts and each actor loads the model: paid once per run) and its steady state
(the queries after the first result, from the times the results came back). The runs files are
compared byte for byte. The BM25-only part times the first stage alone against the same with Ray
carrying the (identity) reranking stage for ``--bm25-queries`` queries, and ``ray.init`` on its own.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time


def _load() -> tuple[float, float, float]:
    return os.getloadavg()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=6)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--max-words", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--bm25-queries", type=int, default=100)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch

    from attnsift.engines import RerankerRecipe
    from attnsift.engines.ray import RayEngine
    from attnsift.eval.datasets import load_dataset
    from attnsift.pipeline import Pipeline, attach_texts, first_stage
    from attnsift.progress import quiet_third_party
    from attnsift.trec import write_run
    from attnsift.types import Run

    quiet_third_party()
    torch.set_num_threads(2)
    ds = load_dataset("scifact")
    t = time.perf_counter()
    bm25 = first_stage(ds, "bm25", progress=False)
    index_s = time.perf_counter() - t
    queries = list(ds.queries.values())
    sub = queries[: args.queries]
    first = Pipeline(bm25, first_stage_k=args.depth).run(sub, progress=False)
    first = attach_texts(first, ds.corpus, progress=False)
    recipe = RerankerRecipe("icr", args.model, {"max_words": args.max_words})
    t = time.perf_counter()
    local_rr = recipe.build()
    load_s = time.perf_counter() - t
    info = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "torch": torch.__version__,
            "queries": args.queries, "depth": args.depth, "max_words": args.max_words, "model": args.model,
            "bm25_index_s": round(index_s, 2), "model_load_s": round(load_s, 2), "load_before": _load()}
    print(json.dumps(info), flush=True)

    engine = RayEngine(num_workers=2, num_cpus_per_worker=1, threads_per_worker=1, batch_size=1)
    t = time.perf_counter()
    engine.start()
    init_s = time.perf_counter() - t
    rows = []
    runs = {}
    for rep in range(args.repeats):
        # (a) local, 2 threads, model loaded
        torch.set_num_threads(2)
        pipe = Pipeline(first, local_rr, first_stage_k=args.depth, depth=args.depth)
        load = _load()
        t = time.perf_counter()
        local = pipe.run(sub, progress=False)
        local_s = time.perf_counter() - t
        rows.append({"repeat": rep, "kind": "local (1 process, 2 threads)", "wall_s": round(local_s, 2),
                     "queries_per_s": round(len(sub) / local_s, 4), "load": load})
        print(json.dumps(rows[-1]), flush=True)
        runs["local"] = local
        # (b) Ray, 2 actors x 1 thread; the pool starts (and loads the model) inside the run
        pipe = Pipeline(first, recipe, first_stage_k=args.depth, depth=args.depth)
        load = _load()
        stamps = []
        t = time.perf_counter()
        results = []
        for res in pipe.stream(sub, progress=False, engine=engine, ordered=False):
            stamps.append(time.perf_counter() - t)
            results.append(res)
        ray_s = time.perf_counter() - t
        order = {q.id: i for i, q in enumerate(sub)}
        results.sort(key=lambda r: order[r.query.id])
        runs["ray"] = Run((r.ranking for r in results), name=pipe.name)
        steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else None
        rows.append({"repeat": rep, "kind": "ray (2 workers x 1 thread)", "wall_s": round(ray_s, 2),
                     "queries_per_s": round(len(sub) / ray_s, 4), "first_result_s": round(stamps[0], 2),
                     "steady_queries_per_s": round(steady, 4) if steady else None, "load": load})
        print(json.dumps(rows[-1]), flush=True)
        _save(args.json, {"info": info, "rows": rows})  # each row as it comes: a long run keeps what it measured

    tmp = "/tmp/attnsift-ray-bench"
    os.makedirs(tmp, exist_ok=True)
    write_run(runs["local"], f"{tmp}/local.trec")
    write_run(runs["ray"], f"{tmp}/ray.trec")
    same = open(f"{tmp}/local.trec", "rb").read() == open(f"{tmp}/ray.trec", "rb").read()

    # BM25 only: the first stage alone, and with Ray carrying the (identity) reranking stage
    many = queries[: args.bm25_queries]
    bm25_rows = []
    for rep in range(args.repeats):
        t = time.perf_counter()
        Pipeline(bm25, first_stage_k=100).run(many, progress=False)
        alone = time.perf_counter() - t
        t = time.perf_counter()
        Pipeline(bm25, RerankerRecipe("none"), first_stage_k=100).run(many, progress=False, engine=engine)
        with_ray = time.perf_counter() - t
        bm25_rows.append({"repeat": rep, "bm25_alone_s": round(alone, 3), "bm25_with_ray_stage_s": round(with_ray, 3),
                          "overhead_ms_per_query": round((with_ray - alone) / len(many) * 1000, 1), "load": _load()})
        print(json.dumps(bm25_rows[-1]), flush=True)
    engine.close()

    def med(kind: str, key: str) -> float | None:
        vals = [r[key] for r in rows if r["kind"].startswith(kind) and r.get(key) is not None]
        return round(statistics.median(vals), 4) if vals else None

    summary = {"ray_init_s": round(init_s, 2), "identical_run_files": same,
               "local_queries_per_s_median": med("local", "queries_per_s"),
               "ray_queries_per_s_median": med("ray", "queries_per_s"),
               "ray_steady_queries_per_s_median": med("ray", "steady_queries_per_s"),
               "ray_first_result_s_median": med("ray", "first_result_s"),
               "bm25_overhead_ms_per_query_median": round(statistics.median(r["overhead_ms_per_query"]
                                                                           for r in bm25_rows), 1),
               "load_after": _load()}
    print(json.dumps(summary), flush=True)
    _save(args.json, {"info": info, "rows": rows, "bm25": bm25_rows, "summary": summary})


def _save(path: str | None, obj: dict) -> None:
    if path:
        from attnsift.io import atomic_write_json

        atomic_write_json(path, obj)


if __name__ == "__main__":
    main()
