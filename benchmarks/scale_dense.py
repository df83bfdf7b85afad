"""Dense retrieval at MS MARCO size: faiss IVF-PQ (and HNSW where it fits) built from streamed batches.

Synthetic 384-dimension vectors (MiniLM's size) at the full passage count (8,841,823) are generated in
seeded batches, each reproducible on its own, so no stage ever holds them all (13.6 GB as float32).
They have cluster structure: 2,048 topic centres with Zipf-like sizes, 32 sub-topics each, and
per-point noise; queries are drawn near sub-topic centres, so their exact top-100 is a real
neighbourhood, not ties in noise.

Each stage runs in its own process (its own peak RSS):

- ``full``: IVF-PQ over all vectors through :meth:`FaissIndex.build_streaming` (sampling pass, training,
  filling), written to disk and read back; recall@100 of 200 queries against exact search over all
  vectors (computed during the filling pass, timed apart), for several ``nprobe``; queries/s.
- ``subset``: the first 200,000 vectors: exact Flat, IVF-PQ and HNSW; recall@100 and queries/s for
  several ``nprobe`` / ``efSearch``; HNSW's build time and memory, and its projected memory at full size.
- ``encode``: MiniLM (the real model) on ~2,000 real MS MARCO passages (the DL19 pool) on this
  machine's cores: passages/s and the projected time for 8,841,823 passages.

OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` unless set): with the default spinning,
faiss's training ran 10-15x slower while other jobs shared the CPU.

Usage (results to benchmarks/results/scale_dense.{md,json}; full size needs ~2 GB RAM and ~1 h on 2 cores)::

    flock /tmp/attnsift-heavy.lock .venv/bin/python benchmarks/scale_dense.py --scratch /work/scratch/C
    .venv/bin/python benchmarks/scale_dense.py --n 300000 --subset 50000 --stages full,subset   # a quick check
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
        self.gen_s = 0.0

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
            t0 = time.perf_counter()
            x = self._make(np.random.default_rng([self.seed, 2, b]), min(self.batch, self.n - start))
            x = x[: n - start]
            self.gen_s += time.perf_counter() - t0
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
        self.start, self.seconds = 0, 0.0

    def update(self, x: np.ndarray) -> None:
        t0 = time.perf_counter()
        s = self.q @ x.T  # [Q, b]
        ids = np.broadcast_to(np.arange(self.start, self.start + x.shape[0]), s.shape)
        s, ids = np.concatenate([self.scores, s], 1), np.concatenate([self.ids, ids], 1)
        if s.shape[1] > self.k:
            part = np.argpartition(-s, self.k - 1, axis=1)[:, : self.k]
            s, ids = np.take_along_axis(s, part, 1), np.take_along_axis(ids, part, 1)
        self.scores, self.ids = s, ids
        self.start += x.shape[0]
        self.seconds += time.perf_counter() - t0


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
    from attnsift.indexes.faiss_index import FaissIndex

    gen = Synthetic(a.n, batch=a.batch, seed=a.seed)
    q = gen.queries(a.queries)
    exact = ExactTopK(q, 100)
    passes = {"n": 0}
    marks: dict[str, float] = {}

    def batches():
        passes["n"] += 1
        marks[f"pass{passes['n']}_start"], g0 = time.perf_counter(), gen.gen_s
        for x in gen.batches():
            if passes["n"] == 2:  # the filling pass also gives the exact top-100 over all vectors
                exact.update(x)
            yield x
        marks[f"pass{passes['n']}_end"] = time.perf_counter()
        marks[f"pass{passes['n']}_generation_s"] = gen.gen_s - g0

    rss0 = rss_now()
    t0 = time.perf_counter()
    idx = FaissIndex.build_streaming(batches, a.n, DIM, "ivfpq", nlist=a.nlist, pq_m=a.pq_m, nbits=8,
                                     train_size=a.train_size, nprobe=16, progress=True)
    end = time.perf_counter()
    timings = {"sample_pass_s": marks["pass1_end"] - marks["pass1_start"], "sample_pass_generation_s": marks["pass1_generation_s"],
               "train_s": marks["pass2_start"] - marks["pass1_end"], "fill_pass_s": end - marks["pass2_start"],
               "fill_generation_s": marks["pass2_generation_s"], "exact_top100_s": exact.seconds, "total_s": end - t0}
    timings["fill_s"] = timings["fill_pass_s"] - timings["fill_generation_s"] - exact.seconds
    timings["build_s"] = timings["sample_pass_s"] - timings["sample_pass_generation_s"] + timings["train_s"] + timings["fill_s"]
    out = {"n": a.n, "dim": DIM, "params": idx.params, "timings": timings, "rss_before_bytes": rss0,
           "rss_after_build_bytes": rss_now(), "peak_rss_build_bytes": peak_rss(), "index_bytes": idx.nbytes(),
           "bytes_per_vector": idx.nbytes() / a.n}
    # persistence: write, read back, same answers
    folder = Path(a.scratch) / "ivfpq_full"
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    idx.save(folder)
    out["save_s"] = time.perf_counter() - t
    out["file_bytes"] = (folder / "index.faiss").stat().st_size
    t = time.perf_counter()
    back = FaissIndex.load(folder, idx.info())
    out["load_s"] = time.perf_counter() - t
    out["loaded_same_results"] = bool((back.search(q[:20], 100)[1] == idx.search(q[:20], 100)[1]).all())
    del back
    (folder / "index.faiss").unlink()
    sweep = []
    for nprobe in a.nprobes:
        qps1, pos = timed_search(idx, q, 100, 1, nprobe=nprobe)
        qps_all, _ = timed_search(idx, q, 100, os.cpu_count() or 1, nprobe=nprobe)
        sweep.append({"nprobe": nprobe, "recall@100": recall(pos, exact.ids), "recall@10": recall(pos[:, :10], np.take_along_axis(
            exact.ids, np.argsort(-exact.scores, 1), 1)[:, :10]), "qps_1_thread": qps1, "qps_all_threads": qps_all})
        print(f"  full nprobe={nprobe}: {sweep[-1]}", file=sys.stderr, flush=True)
    out["sweep"] = sweep
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
    import torch

    from attnsift.retrieval.encoders import Encoder

    data = Path(os.environ.get("ATTNSIFT_DATA", "/work/shared/data")) / "trec-dl19-passage" / "corpus.jsonl"
    texts = []
    with open(data, encoding="utf-8") as fh:
        for line in fh:
            texts.append(json.loads(line)["text"])
            if len(texts) >= a.passages:
                break
    enc = Encoder("minilm", device="cpu", batch_size=64)
    enc.encode_documents(texts[:64], progress=False)  # warm-up (weights paged in, kernels chosen)
    t = time.perf_counter()
    enc.encode_documents(texts, progress=False)
    secs = time.perf_counter() - t
    rate = len(texts) / secs
    return {"passages": len(texts), "mean_words": float(np.mean([len(t.split()) for t in texts])),
            "torch_threads": torch.get_num_threads(), "seconds": secs, "passages_per_s": rate,
            "projected_full_s": MSMARCO / rate, "projected_full_days": MSMARCO / rate / 86400}


STAGES = {"full": stage_full, "subset": stage_subset, "encode": stage_encode}


# ----------------------------------------------------------------------------- report
def gb(b: float) -> str:
    return f"{b / 1e9:.2f} GB"


def write_report(res: dict, out: Path) -> None:
    from attnsift.io import atomic_write_json, atomic_write_text

    atomic_write_json(out.with_suffix(".json"), res)
    L = ["# Dense retrieval at MS MARCO size (faiss IVF-PQ, HNSW) on this machine", "",
         f"Command: `{res['command']}`", "",
         f"Machine: {res['machine']}; load average at start {res['load_start']}, at end {res['load_end']} "
         "(the VM is shared with other workers: speeds are lower bounds).", ""]
    if "full" in res and res["full"]["n"] < MSMARCO:
        L += [f"**Measured at {res['full']['n']:,} vectors, not at the full {MSMARCO:,}: see the reading at the end "
              "(and the projection under the IVF-PQ table).**", ""]
    if "full" in res:
        f = res["full"]
        t = f["timings"]
        L += [f"## IVF-PQ over {f['n']:,} synthetic {f['dim']}-d vectors (streamed; never all in memory)", "",
              f"Parameters: {f['params']}.", "",
              "| step | seconds |", "|---|---:|",
              f"| sampling pass (training rows only kept; generation {t['sample_pass_generation_s']:.0f} s) | {t['sample_pass_s']:.0f} |",
              f"| training (k-means + PQ codebooks) | {t['train_s']:.0f} |",
              f"| filling (excluding generation {t['fill_generation_s']:.0f} s and exact top-100 {t['exact_top100_s']:.0f} s) | {t['fill_s']:.0f} |",
              f"| **build (sampling + training + filling, without generation)** | **{t['build_s']:.0f}** ({t['build_s'] / 60:.1f} min) |", "",
              f"Memory: peak RSS during the build {gb(f['peak_rss_build_bytes'])} (process start {gb(f['rss_before_bytes'])}, "
              f"after the build {gb(f['rss_after_build_bytes'])}); the vectors as float32 would be {gb(f['n'] * f['dim'] * 4)}.",
              f"Index: {gb(f['index_bytes'])} ({f['bytes_per_vector']:.1f} bytes per vector), file {gb(f['file_bytes'])}; "
              f"written in {f['save_s']:.1f} s, read back in {f['load_s']:.1f} s, same results after reading: {f['loaded_same_results']}.", "",
              f"Recall against exact inner-product search over all {f['n']:,} vectors ({res['queries']} queries, top-100):", "",
              "| nprobe | recall@100 | recall@10 | queries/s (1 thread) | queries/s (all threads) |", "|---:|---:|---:|---:|---:|"]
        L += [f"| {s['nprobe']} | {s['recall@100']:.3f} | {s['recall@10']:.3f} | {s['qps_1_thread']:.0f} | {s['qps_all_threads']:.0f} |"
              for s in f["sweep"]]
        L.append("")
        if f["n"] < MSMARCO:
            r = MSMARCO / f["n"]
            idx_full = f["index_bytes"] * r
            fill_full = (t["fill_s"] + t["sample_pass_s"] - t["sample_pass_generation_s"]) * r
            L += [f"Projected to {MSMARCO:,} vectors (x{r:.2f}; filling and the index grow linearly, training does not: "
                  "same sample and lists): "
                  f"build {(t['train_s'] + fill_full) / 60:.0f} min ({t['train_s']:.0f} s training + {fill_full / 60:.0f} min "
                  f"filling), index {gb(idx_full)}, peak RSS about {gb(f['peak_rss_build_bytes'] - f['index_bytes'] + idx_full)}; "
                  "queries/s fall about in proportion to the codes scanned per list (x{:.1f} per list at the same nlist).".format(r), ""]
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
    if "encode" in res:
        e = res["encode"]
        L += ["## Encoding with MiniLM (all-MiniLM-L6-v2, PyTorch, CPU)", "",
              f"{e['passages']:,} real MS MARCO passages (the DL19 pool, {e['mean_words']:.0f} words on average), batch 64, "
              f"{e['torch_threads']} torch threads: {e['seconds']:.1f} s, **{e['passages_per_s']:.1f} passages/s**. "
              f"Projected for {MSMARCO:,} passages: {e['projected_full_s'] / 3600:.0f} h = **{e['projected_full_days']:.1f} days**.", ""]
    L += res.get("notes", [])
    atomic_write_text(out.with_suffix(".md"), "\n".join(L) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=MSMARCO)
    p.add_argument("--subset", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--pq-m", type=int, default=48)
    p.add_argument("--train-size", type=int, default=65_536)
    p.add_argument("--ef-construction", type=int, default=40)
    p.add_argument("--nprobes", type=lambda s: [int(v) for v in s.split(",")], default=[4, 8, 16, 32, 64])
    p.add_argument("--ef-searches", type=lambda s: [int(v) for v in s.split(",")], default=[64, 128, 256])
    p.add_argument("--passages", type=int, default=2000)
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
    res = {"command": " ".join([".venv/bin/python", "benchmarks/scale_dense.py", *sys.argv[1:]]),
           "machine": f"{os.cpu_count()}-core {cpu_name()} VM, "
                      f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, no GPU, "
                      f"faiss-cpu {version('faiss-cpu')}, torch {version('torch')}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}",
           "load_start": [round(v, 2) for v in os.getloadavg()], "queries": a.queries}
    for stage in a.stages.split(","):
        print(f"stage {stage} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--stage", stage], stdout=subprocess.PIPE,
                               text=True, check=True)
        res[stage] = json.loads(child.stdout.strip().splitlines()[-1])
        res[stage]["stage_wall_s"] = time.perf_counter() - t
        res["load_end"] = [round(v, 2) for v in os.getloadavg()]
        write_report(res, Path(a.out))  # after each stage, so a late stage's failure keeps the others
    print(Path(a.out).with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
