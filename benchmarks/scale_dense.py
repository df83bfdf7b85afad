"""Dense retrieval at MS MARCO size: faiss IVF-PQ (and HNSW where it fits) built from streamed batches.

Synthetic 384-dimension vectors (MiniLM's size) at the full passage count (8,841,823) are generated in
seeded batches, each reproducible on its own, so no stage ever holds them all (13.6 GB as float32).
They have cluster structure: 2,048 topic centres with Zipf-like sizes, 32 sub-topics each, and
per-point noise; queries are drawn near sub-topic centres, so their exact top-100 is a real
neighbourhood, not ties in noise.

Each stage runs in its own process (its own peak RSS):

- ``full``: IVF-PQ with a refine stage (``refine=sq8`` by default: an 8-bit copy of every vector that
  re-scores the PQ candidates) over all vectors through :meth:`FaissIndex.build_streaming` (training on
  the first ``train_size`` rows, which are independent draws, or with ``--train-from sample`` on a
  seeded sample collected in a first pass; then filling), written to disk, freed and read back;
  recall@100 of 200 queries against the exact top-100 over all vectors (computed during the filling
  pass, timed apart) for several ``nprobe``, with the PQ codes alone and with refine at several
  ``k_factor``; queries/s at 1 and 2 faiss threads, interleaved. Build wall and CPU seconds exclude the
  vector generation and the exact top-100.
- ``subset``: the first 200,000 vectors: exact Flat, IVF-PQ and HNSW; recall@100 and queries/s for
  several ``nprobe`` / ``efSearch``; HNSW's build time and memory, and its projected memory at full size.
- ``encode``: MiniLM (the real model) on a seeded sample of 1,000 real MS MARCO passages (the DL19
  pool), the torch and ONNX int8 backends in interleaved rounds: passages/s and the projected time for
  8,841,823 passages on one machine and on N.

OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` unless set): with the default spinning,
faiss's training ran 10-15x slower while other jobs shared the CPU.

Usage (results to benchmarks/results/scale_dense.{md,json}; full size needs ~5 GB RAM and ~30 min on 2 cores;
``--keep-earlier`` keeps the previous report below the new one)::

    flock /tmp/attnsift-heavy.lock .venv/bin/python benchmarks/scale_dense.py --stages full,encode --keep-earlier --scratch /work/scratch/B
    .venv/bin/python benchmarks/scale_dense.py --n 200000 --nlist 512 --train-size 20480 --stages full --out /tmp/dry   # a quick check
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

# OpenMP threads that sleep instead of spinning when they wait: on a shared, oversubscribed VM the
# default spinning made faiss's k-means 10-15x slower (set before faiss or torch load OpenMP)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

DIM = 384
MSMARCO = 8_841_823
TOPICS, SUBTOPICS = 2048, 32


# ----------------------------------------------------------------------------- synthetic vectors
class Synthetic:
    """Seeded clustered unit vectors; batch ``b`` of size ``batch`` is the same whenever it is made."""

    def __init__(self, n: int, dim: int = DIM, batch: int = 100_000, seed: int = 0) -> None:
        self.n, self.dim, self.batch, self.seed = n, dim, batch, seed
        rng = np.random.default_rng([seed, 1])
        topics = rng.standard_normal((TOPICS, dim)).astype(np.float32)
        topics /= np.linalg.norm(topics, axis=1, keepdims=True)
        offsets = rng.standard_normal((TOPICS, SUBTOPICS, dim)).astype(np.float32) * (0.6 / np.sqrt(dim))
        self.centres = (topics[:, None, :] + offsets).reshape(TOPICS * SUBTOPICS, dim)  # [T*S, dim]
        self.centres /= np.linalg.norm(self.centres, axis=1, keepdims=True)
        w = 1.0 / (np.arange(TOPICS) + 20.0) ** 0.8  # Zipf-like topic sizes
        self.topic_p = w / w.sum()
        self.noise = (0.25 + 0.2 * rng.random(TOPICS * SUBTOPICS)).astype(np.float32)  # per sub-topic spread
        self.gen_s = self.gen_cpu = 0.0

    def _make(self, rng: np.random.Generator, m: int, noise_scale: float = 1.0) -> np.ndarray:
        sub = rng.choice(TOPICS, m, p=self.topic_p) * SUBTOPICS + rng.integers(0, SUBTOPICS, m)
        # int8 uniform noise (std ~73.6) is ~5x cheaper to draw than Gaussian noise
        x = rng.integers(-127, 128, (m, self.dim), dtype=np.int8).astype(np.float32)
        x *= (noise_scale * self.noise[sub] / (73.6 * np.sqrt(self.dim)))[:, None]
        x += self.centres[sub]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def batches(self, limit: int | None = None):
        """Batches of rows ``0 .. limit`` (default all)."""
        n = self.n if limit is None else limit
        for b, start in enumerate(range(0, n, self.batch)):
            t0, c0 = time.perf_counter(), time.process_time()
            x = self._make(np.random.default_rng([self.seed, 2, b]), min(self.batch, self.n - start))
            x = x[: n - start]
            self.gen_s += time.perf_counter() - t0
            self.gen_cpu += time.process_time() - c0
            yield x

    def queries(self, q: int) -> np.ndarray:
        return self._make(np.random.default_rng([self.seed, 3]), q, noise_scale=0.8)


# ----------------------------------------------------------------------------- measuring
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def rss_now() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ExactTopK:
    """Running exact top-k (inner product) of fixed queries over batches seen in order."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.q, self.k = queries, k
        self.scores = np.full((len(queries), 0), -np.inf, np.float32)
        self.ids = np.zeros((len(queries), 0), np.int64)
        self.start, self.seconds, self.cpu = 0, 0.0, 0.0

    def update(self, x: np.ndarray) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        s = self.q @ x.T  # [Q, b]
        ids = np.broadcast_to(np.arange(self.start, self.start + x.shape[0]), s.shape)
        s, ids = np.concatenate([self.scores, s], 1), np.concatenate([self.ids, ids], 1)
        if s.shape[1] > self.k:
            part = np.argpartition(-s, self.k - 1, axis=1)[:, : self.k]
            s, ids = np.take_along_axis(s, part, 1), np.take_along_axis(ids, part, 1)
        self.scores, self.ids = s, ids
        self.start += x.shape[0]
        self.seconds += time.perf_counter() - t0
        self.cpu += time.process_time() - c0


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / len(t) for f, t in zip(found, truth)]))


def timed_search(index, q: np.ndarray, k: int, threads: int, repeats: int = 3, **params) -> tuple[float, np.ndarray]:
    """Queries/s (best of ``repeats``) of one batched search with ``threads`` faiss threads."""
    import faiss

    faiss.omp_set_num_threads(threads)
    best, pos = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, pos = index.search(q, k, **params)
        best = min(best, time.perf_counter() - t0)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    return len(q) / best, pos


# ----------------------------------------------------------------------------- stages
def stage_full(a: argparse.Namespace) -> dict:
    """IVF-PQ with a refine stage over all ``a.n`` vectors; recall and queries/s with and without refine."""
    import faiss

    from attnsift.indexes.faiss_index import FaissIndex

    gen = Synthetic(a.n, batch=a.batch, seed=a.seed)
    q = gen.queries(a.queries)
    exact = ExactTopK(q, 100)
    marks: dict[str, float] = {}
    train = None
    if a.train_from == "first":
        # The rows are independent draws: the first train_size rows are a uniform sample, without a
        # sampling pass over all of them (at 1M that pass cost 2 s beyond generating the rows).
        t = time.perf_counter()
        train = np.concatenate(list(Synthetic(a.n, batch=a.batch, seed=a.seed).batches(limit=a.train_size)))
        marks["train_rows_generation_s"] = time.perf_counter() - t

    def batches():
        marks.setdefault("fill_start", time.perf_counter())
        marks.setdefault("fill_start_cpu", time.process_time())
        for x in gen.batches():
            exact.update(x)  # the exact top-100 over all vectors, timed apart
            yield x

    rss0 = rss_now()
    t0, c0 = time.perf_counter(), time.process_time()
    idx = FaissIndex.build_streaming(batches, a.n, DIM, "ivfpq", train=train, nlist=a.nlist, pq_m=a.pq_m, nbits=8,
                                     train_size=a.train_size, nprobe=16, refine=a.refine, k_factor=8, progress=True)
    end, cend = time.perf_counter(), time.process_time()
    del train
    fill_wall = end - marks["fill_start"] - gen.gen_s - exact.seconds
    fill_cpu = cend - marks["fill_start_cpu"] - gen.gen_cpu - exact.cpu
    timings = {"train_s": marks["fill_start"] - t0, "train_cpu_s": marks["fill_start_cpu"] - c0,
               "fill_s": fill_wall, "fill_cpu_s": fill_cpu, "fill_generation_s": gen.gen_s,
               "exact_top100_s": exact.seconds, "train_rows_generation_s": marks.get("train_rows_generation_s", 0.0)}
    timings["build_s"] = timings["train_s"] + fill_wall
    timings["build_cpu_s"] = timings["train_cpu_s"] + fill_cpu
    out = {"n": a.n, "dim": DIM, "params": dict(idx.params), "timings": timings, "rss_before_bytes": rss0,
           "rss_after_build_bytes": rss_now(), "peak_rss_build_bytes": peak_rss(), "train_from": a.train_from,
           "pq_codes_bytes": idx.ntotal * (a.pq_m + 8), "refine_codes_bytes": idx.ntotal * DIM * {"sq8": 1, "fp16": 2, "flat": 4}[a.refine]}
    before = idx.search(q[:20], 100)[1]
    folder = Path(a.scratch) / "ivfpq_full"
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    idx.save(folder)
    out["save_s"] = time.perf_counter() - t
    out["file_bytes"] = (folder / "index.faiss").stat().st_size
    info = idx.info()
    del idx  # the loaded copy alone from here: peak RSS stays one index
    rss_freed = rss_now()
    t = time.perf_counter()
    idx = FaissIndex.load(folder, info)
    out["load_s"] = time.perf_counter() - t
    out["rss_loaded_growth_bytes"] = rss_now() - rss_freed
    out["loaded_same_results"] = bool((idx.search(q[:20], 100)[1] == before).all())
    (folder / "index.faiss").unlink()
    plain = FaissIndex(idx._ivf(), "ivfpq", "ip", {k: v for k, v in idx.params.items() if k not in ("refine", "k_factor")})
    top10 = np.take_along_axis(exact.ids, np.argsort(-exact.scores, 1), 1)[:, :10]
    sweep = []
    for nprobe in a.nprobes:
        for kf in [None, *a.k_factors]:
            target, extra = (plain, {}) if kf is None else (idx, {"k_factor": kf})
            qps = {}
            for threads in a.threads:  # interleaved: one thread count after the other, per setting
                qps[threads], pos = timed_search(target, q, 100, threads, nprobe=nprobe, **extra)
            row = {"nprobe": nprobe, "k_factor": kf, "recall@100": recall(pos, exact.ids), "recall@10": recall(pos[:, :10], top10),
                   **{f"qps_{t}_threads": v for t, v in qps.items()}, "load": [round(v, 2) for v in os.getloadavg()]}
            sweep.append(row)
            print(f"  full {row}", file=sys.stderr, flush=True)
    out["sweep"] = sweep
    out["faiss_threads_max"] = faiss.omp_get_max_threads()
    out["peak_rss_bytes"] = peak_rss()
    return out


def stage_subset(a: argparse.Namespace) -> dict:
    from attnsift.indexes.faiss_index import FaissIndex, estimated_bytes, resolve_index_params

    gen = Synthetic(a.n, batch=a.batch, seed=a.seed)
    x = np.concatenate(list(gen.batches(limit=a.subset)))
    q = gen.queries(a.queries)
    out: dict = {"n": a.subset}
    t = time.perf_counter()
    flat = FaissIndex.build(x, "flat")
    qps1, truth = timed_search(flat, q, 100, 1)
    qps_all, _ = timed_search(flat, q, 100, os.cpu_count() or 1)
    out["flat"] = {"build_s": time.perf_counter() - t, "qps_1_thread": qps1, "qps_all_threads": qps_all,
                   "index_bytes": flat.nbytes()}
    del flat
    top10 = truth[:, :10]
    t = time.perf_counter()
    ivf = FaissIndex.build(x, "ivfpq", nlist=min(a.nlist, a.subset // 39), pq_m=a.pq_m, train_size=a.train_size, nprobe=16)
    out["ivfpq"] = {"params": ivf.params, "build_s": time.perf_counter() - t, "index_bytes": ivf.nbytes(), "sweep": []}
    for nprobe in a.nprobes:
        if nprobe > ivf.params["nlist"]:
            continue
        qps1, pos = timed_search(ivf, q, 100, 1, nprobe=nprobe)
        qps_all, _ = timed_search(ivf, q, 100, os.cpu_count() or 1, nprobe=nprobe)
        out["ivfpq"]["sweep"].append({"nprobe": nprobe, "recall@100": recall(pos, truth), "recall@10": recall(pos[:, :10], top10),
                                      "qps_1_thread": qps1, "qps_all_threads": qps_all})
        print(f"  subset ivfpq nprobe={nprobe}: {out['ivfpq']['sweep'][-1]}", file=sys.stderr, flush=True)
    del ivf
    rss0 = rss_now()
    t = time.perf_counter()
    hnsw = FaissIndex.build(x, "hnsw", ef_construction=a.ef_construction)
    out["hnsw"] = {"params": dict(hnsw.params), "build_s": time.perf_counter() - t, "index_bytes": hnsw.nbytes(),
                   "rss_growth_bytes": rss_now() - rss0, "sweep": []}
    for ef in a.ef_searches:
        qps1, pos = timed_search(hnsw, q, 100, 1, ef_search=ef)
        qps_all, _ = timed_search(hnsw, q, 100, os.cpu_count() or 1, ef_search=ef)
        out["hnsw"]["sweep"].append({"ef_search": ef, "recall@100": recall(pos, truth), "recall@10": recall(pos[:, :10], top10),
                                     "qps_1_thread": qps1, "qps_all_threads": qps_all})
        print(f"  subset hnsw ef={ef}: {out['hnsw']['sweep'][-1]}", file=sys.stderr, flush=True)
    per_vec = out["hnsw"]["index_bytes"] / a.subset
    out["hnsw"]["projected_full_bytes"] = per_vec * MSMARCO
    out["hnsw"]["estimated_full_bytes"] = estimated_bytes("hnsw", MSMARCO, DIM, resolve_index_params("hnsw", MSMARCO, DIM, ef_construction=a.ef_construction))
    out["hnsw"]["projected_full_build_s"] = out["hnsw"]["build_s"] * MSMARCO / a.subset * np.log(MSMARCO) / np.log(a.subset)
    out["peak_rss_bytes"] = peak_rss()
    return out


def stage_encode(a: argparse.Namespace) -> dict:
    """MiniLM on a seeded sample of real MS MARCO passages, torch and ONNX int8 interleaved (best round each)."""
    import torch

    from attnsift.retrieval.encoders import Encoder

    data = Path(os.environ.get("ATTNSIFT_DATA", "/work/shared/data")) / "trec-dl19-passage" / "corpus.jsonl"
    with open(data, encoding="utf-8") as fh:
        pool = [json.loads(line)["text"] for line in fh]
    pick = np.sort(np.random.default_rng(a.seed).choice(len(pool), min(a.passages, len(pool)), replace=False))
    texts = [pool[i] for i in pick]
    encoders = {b: Encoder("minilm", device="cpu", batch_size=64, backend=b) for b in a.backends}
    for enc in encoders.values():
        enc.encode_documents(texts[:64], progress=False)  # warm-up (weights paged in, kernels chosen)
    rounds: dict[str, list[float]] = {b: [] for b in encoders}
    vecs = {}
    for _ in range(a.rounds):
        for b, enc in encoders.items():
            t = time.perf_counter()
            vecs[b] = enc.encode_documents(texts, progress=False)
            rounds[b].append(time.perf_counter() - t)
            print(f"  encode {b}: {rounds[b][-1]:.1f} s, load {os.getloadavg()}", file=sys.stderr, flush=True)
    out = {"passages": len(texts), "pool": len(pool), "mean_words": float(np.mean([len(t.split()) for t in texts])),
           "torch_threads": torch.get_num_threads(), "rounds": a.rounds, "backends": {}}
    for b, secs in rounds.items():
        rate = len(texts) / min(secs)
        out["backends"][b] = {"seconds_each_round": secs, "passages_per_s": rate, "projected_full_s": MSMARCO / rate,
                              "projected_full_days": MSMARCO / rate / 86400}
    if "torch" in vecs:
        for b in vecs:
            if b != "torch":
                out["backends"][b]["mean_cosine_to_torch"] = float(np.mean(np.sum(vecs[b] * vecs["torch"], 1)))
    return out


STAGES = {"full": stage_full, "subset": stage_subset, "encode": stage_encode}


# ----------------------------------------------------------------------------- report
def gb(b: float) -> str:
    return f"{b / 1e9:.2f} GB"


def full_section(res: dict) -> list[str]:
    f = res["full"]
    t, p = f["timings"], f["params"]
    threads = [k.split("_")[1] for k in f["sweep"][0] if k.startswith("qps_")]
    L = [f"## IVF-PQ + {p['refine']} refine over {f['n']:,} synthetic {f['dim']}-d vectors (streamed; never all in memory)", "",
         f"Parameters: {p}.", "",
         "| step | wall s | CPU s |", "|---|---:|---:|",
         f"| training (k-means {p['nlist']} lists + PQ codebooks + {p['refine']} ranges) on {p['train_size_used']:,} vectors | "
         f"{t['train_s']:.0f} | {t['train_cpu_s']:.0f} |",
         f"| filling (coarse assignment, PQ and {p['refine']} encoding; without generation {t['fill_generation_s']:.0f} s "
         f"and the exact top-100 {t['exact_top100_s']:.0f} s) | {t['fill_s']:.0f} | {t['fill_cpu_s']:.0f} |",
         f"| **build** | **{t['build_s']:.0f}** ({t['build_s'] / 60:.1f} min) | **{t['build_cpu_s']:.0f}** |", "",
         f"Training sample: {'the first ' + format(p['train_size_used'], ',') + ' rows (independent draws; no sampling pass)' if f['train_from'] == 'first' else 'the seeded sampling pass of build_streaming'}.",
         f"Memory: peak RSS during the build {gb(f['peak_rss_build_bytes'])} (process start {gb(f['rss_before_bytes'])}, after the "
         f"build {gb(f['rss_after_build_bytes'])}); the vectors as float32 would be {gb(f['n'] * f['dim'] * 4)}. Peak RSS of the "
         f"whole stage (with the reloaded index and the searches): {gb(f['peak_rss_bytes'])}.",
         f"Index file: {gb(f['file_bytes'])} ({f['file_bytes'] / f['n']:.1f} bytes per vector: PQ codes + ids "
         f"{gb(f['pq_codes_bytes'])}, {p['refine']} copy {gb(f['refine_codes_bytes'])}); written in {f['save_s']:.0f} s, read back in "
         f"{f['load_s']:.0f} s (RSS +{gb(f['rss_loaded_growth_bytes'])}), same results after reading: {f['loaded_same_results']}.", "",
         f"Recall against the exact inner-product top-100 over all {f['n']:,} vectors ({res['queries']} queries, computed "
         f"streamed during the filling pass); queries/s of one batched search of {res['queries']} queries, best of 3, at "
         f"{' and '.join(threads)} faiss threads (interleaved); k_factor '-' = the IVF-PQ codes alone:", "",
         "| nprobe | k_factor | recall@100 | recall@10 | " + " | ".join(f"queries/s ({n} thr)" for n in threads) + " | load (1 min) |",
         "|---:|---:|---:|---:|" + "---:|" * len(threads) + "---:|"]
    L += [f"| {s['nprobe']} | {s['k_factor'] or '-'} | {s['recall@100']:.3f} | {s['recall@10']:.3f} | "
          + " | ".join(f"{s[f'qps_{n}_threads']:.0f}" for n in threads) + f" | {s['load'][0]:.1f} |" for s in f["sweep"]]
    return L + [""]


def encode_section(res: dict) -> list[str]:
    e = res["encode"]
    L = ["## Encoding with MiniLM (all-MiniLM-L6-v2) on this machine's CPU", "",
         f"{e['passages']:,} real MS MARCO passages (a seeded sample of the {e['pool']:,}-passage DL19 pool, "
         f"{e['mean_words']:.0f} words on average), batch 64, {e['torch_threads']} threads, {e['rounds']} interleaved rounds "
         "(best round):", "",
         "| backend | passages/s | seconds per round | projected for 8,841,823 passages (1 machine) | cosine to torch |",
         "|---|---:|---|---:|---:|"]
    for b, r in e["backends"].items():
        L.append(f"| {b} | **{r['passages_per_s']:.1f}** | {', '.join(f'{x:.1f}' for x in r['seconds_each_round'])} | "
                 f"{r['projected_full_s'] / 3600:.0f} h ({r['projected_full_days']:.1f} days) | "
                 f"{r.get('mean_cosine_to_torch', 1.0):.4f} |")
    best = max(e["backends"].items(), key=lambda kv: kv[1]["passages_per_s"])
    L += ["", f"With `--engine ray` over N machines like this one (one encoder per 2-core machine, corpus shards through "
          f"Ray Data; overhead not included) the {best[0]} figure gives: "
          + ", ".join(f"N={n}: {best[1]['projected_full_s'] / n / 3600:.1f} h" for n in (1, 4, 16, 64)) + ".", ""]
    return L


def write_report(res: dict, out: Path) -> None:
    from attnsift.io import atomic_write_json, atomic_write_text

    atomic_write_json(out.with_suffix(".json"), res)
    L = ["# Dense retrieval at MS MARCO size (faiss IVF-PQ, HNSW) on this machine", "",
         f"Command: `{res['command']}` (date {res['date']})", "",
         f"Machine: {res['machine']}; load average at start {res['load_start']}, at end {res['load_end']} "
         "(the VM is shared with other workers).", ""]
    if "full" in res:
        L += full_section(res)
    if "encode" in res:
        L += encode_section(res)
    if "subset" in res:
        s = res["subset"]
        L += [f"## The first {s['n']:,} vectors: Flat, IVF-PQ, HNSW", "",
              f"Exact Flat: {s['flat']['qps_1_thread']:.0f} queries/s (1 thread), {s['flat']['qps_all_threads']:.0f} (all); "
              f"{gb(s['flat']['index_bytes'])}.", "",
              f"IVF-PQ {s['ivfpq']['params']}: built in {s['ivfpq']['build_s']:.1f} s, {gb(s['ivfpq']['index_bytes'])}.", "",
              "| nprobe | recall@100 | recall@10 | queries/s (1 thread) | queries/s (all threads) |", "|---:|---:|---:|---:|---:|"]
        L += [f"| {x['nprobe']} | {x['recall@100']:.3f} | {x['recall@10']:.3f} | {x['qps_1_thread']:.0f} | {x['qps_all_threads']:.0f} |"
              for x in s["ivfpq"]["sweep"]]
        h = s["hnsw"]
        L += ["", f"HNSW {h['params']}: built in {h['build_s']:.0f} s, {gb(h['index_bytes'])} "
              f"(RSS grew {gb(h['rss_growth_bytes'])}).", "",
              "| efSearch | recall@100 | recall@10 | queries/s (1 thread) | queries/s (all threads) |", "|---:|---:|---:|---:|---:|"]
        L += [f"| {x['ef_search']} | {x['recall@100']:.3f} | {x['recall@10']:.3f} | {x['qps_1_thread']:.0f} | {x['qps_all_threads']:.0f} |"
              for x in h["sweep"]]
        L += ["", f"HNSW at full size ({MSMARCO:,} vectors) would take {gb(h['projected_full_bytes'])} "
              f"(from the measured bytes per vector; attnsift's estimate: {gb(h['estimated_full_bytes'])}) and about "
              f"{h['projected_full_build_s'] / 3600:.1f} h to build on this machine (n log n from the measured build)", ""]
    L += res.get("notes", [])
    if res.get("earlier_md"):
        L += ["", "# Earlier measurements (1,000,000 and 200,000 vectors; encoding under load)", "",
              "Kept as the earlier run recorded them (its command, machine and load average are in its own lines "
              "below: taken while 8 other workers loaded the 2 cores, with nlist 1,024 and no refine stage). Its "
              "statement that the full size was not run is superseded by the tables above.", "", res["earlier_md"]]
    atomic_write_text(out.with_suffix(".md"), "\n".join(L) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=MSMARCO)
    p.add_argument("--subset", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--nlist", type=int, default=4096)
    p.add_argument("--pq-m", type=int, default=48)
    p.add_argument("--train-size", type=int, default=4096 * 40)
    p.add_argument("--ef-construction", type=int, default=40)
    p.add_argument("--nprobes", type=lambda s: [int(v) for v in s.split(",")], default=[8, 16, 32, 64])
    p.add_argument("--ef-searches", type=lambda s: [int(v) for v in s.split(",")], default=[64, 128, 256])
    p.add_argument("--passages", type=int, default=1000)
    p.add_argument("--backends", type=lambda s: s.split(","), default=["torch", "onnx-int8"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--refine", default="sq8", choices=["sq8", "fp16", "flat"])
    p.add_argument("--k-factors", type=lambda s: [int(v) for v in s.split(",")], default=[4, 8, 16])
    p.add_argument("--threads", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2])
    p.add_argument("--train-from", choices=["first", "sample"], default="first")
    p.add_argument("--keep-earlier", action="store_true", help="keep the existing report below the new one")
    p.add_argument("--notes", help="a text file of reading notes appended to the report")
    p.add_argument("--render", action="store_true", help="only write the report again from its JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stages", default="full,subset,encode")
    p.add_argument("--stage", help=argparse.SUPPRESS)
    p.add_argument("--scratch", default="/work/scratch/C")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "scale_dense"))
    a = p.parse_args()
    from importlib.metadata import version

    if a.stage:  # a child: one stage, its result as JSON on stdout
        print(json.dumps(STAGES[a.stage](a)))
        return
    if a.render:  # the report again from its JSON (with --notes: the reading below the figures)
        res = json.loads(Path(a.out).with_suffix(".json").read_text())
        if a.notes:
            res["notes"] = Path(a.notes).read_text().splitlines()
        write_report(res, Path(a.out))
        return
    res = {"command": " ".join([".venv/bin/python", "benchmarks/scale_dense.py", *sys.argv[1:]]),
           "machine": f"{os.cpu_count()}-core {cpu_name()} VM, "
                      f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, no GPU, "
                      f"faiss-cpu {version('faiss-cpu')}, torch {version('torch')}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}",
           "load_start": [round(v, 2) for v in os.getloadavg()], "queries": a.queries,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    out = Path(a.out)
    if a.keep_earlier and out.with_suffix(".json").exists():  # the previous report, kept below the new one
        old = json.loads(out.with_suffix(".json").read_text())
        res["earlier"] = old.get("earlier", old)
        res["earlier_md"] = old.get("earlier_md") or out.with_suffix(".md").read_text().split("\n", 1)[1].replace("\n## ", "\n### ")
    if a.notes:
        res["notes"] = Path(a.notes).read_text().splitlines()
    for stage in a.stages.split(","):
        print(f"stage {stage} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--stage", stage], stdout=subprocess.PIPE,
                               text=True, check=True)
        res[stage] = json.loads(child.stdout.strip().splitlines()[-1])
        res[stage]["stage_wall_s"] = time.perf_counter() - t
        res["load_end"] = [round(v, 2) for v in os.getloadavg()]
        write_report(res, out)  # after each stage, so a late stage's failure keeps the others
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
