"""Driver memory of a dense index over an MS MARCO-format collection: the code before the document store
(a git worktree of an earlier commit) against this checkout, side by side.

Usage::

    git worktree add /work/scratch/a/base 2fee582
    python -m attnsift.eval.datasets.synthetic_msmarco --passages 1000000 --queries 100 --out /work/scratch/a/ms1m
    flock /tmp/attnsift-heavy.lock python benchmarks/dense_memory.py --collection /work/scratch/a/ms1m \\
        --work /work/scratch/a/dm --before /work/scratch/a/base [--index-type flat] [--out benchmarks/results/dense_memory]

Each step runs in a fresh subprocess, so its memory is its own (peak RSS: ``ru_maxrss``; current RSS:
``VmRSS``, split into ``RssAnon``, the process's own memory, and ``RssFile``, resident pages of mapped
files that the kernel drops under pressure; peak ``RssAnon`` sampled every 20 ms), with the attnsift package imported from ``--before`` (the editable install's module map is
pointed at that tree) or from this checkout ("after"). The encoder is a hash encoder: an attnsift
``Encoder`` (a random-weight 1-layer BERT folder, hidden 32, written once to ``--work``, gives its name,
configuration and dimension) whose document and query vectors are the normalised bytes of each text's
BLAKE2b digest (32 dimensions), so no model runs: on this 2-core machine even the tiny BERT encodes
~1,000 passages/s (tokenising dominates), and the figures are about what the driver holds, not about
encoding. The vectors go through the same encoding cache and faiss index as a model's. Steps, for each code:

* ``build``: ``DenseRetriever.from_corpus(dataset.corpus, index_type=...)`` streamed from
  ``collection.tsv`` (through the encoding cache, its own ``$ATTNSIFT_CACHE`` per code), then ``save``;
  RSS after the imports, peak RSS of the build and of the save, the sha256 of the saved files;
* ``load``: ``DenseRetriever.load`` (checksums verified) and the 100 dev/small queries at k=100; RSS
  after the load, peak; a hash of the rankings. Each code loads its own index and the other's (the
  saved format read both ways).

Writes ``<out>.json``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
RESULTS = HERE.parent / "results"


def _status_mb() -> dict[str, int]:
    """``VmRSS``, ``RssAnon`` (the process's own memory) and ``RssFile`` (resident pages of mapped files:
    shared, dropped by the kernel under pressure) in MB."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = round(int(line.split()[1]) / 1024)
    return out


def _rss_mb() -> float:
    return _status_mb()["VmRSS"]


class _AnonPeak:
    """The highest ``RssAnon`` seen, sampled every 20 ms on a thread (``ru_maxrss`` counts file pages too)."""

    def __init__(self) -> None:
        import threading

        self.peak, self._stop = 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _status_mb()["RssAnon"])

    def read(self) -> int:
        return max(self.peak, _status_mb()["RssAnon"])


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _use_code(root: str | None) -> None:
    """Import attnsift from ``root`` (a checkout of another commit) instead of the editable install's tree."""
    if not root:
        return
    finders = [m for n, m in sys.modules.items() if n.startswith("__editable___attnsift") and hasattr(m, "MAPPING")]
    if not finders:
        raise SystemExit("attnsift is not an editable install here; --before needs one")
    for f in finders:
        installed = Path(f.MAPPING["attnsift"]).parent
        f.MAPPING.update({k: str(Path(root) / Path(v).relative_to(installed)) for k, v in f.MAPPING.items()})
        f.NAMESPACES.update({k: [str(Path(root) / Path(p).relative_to(installed)) for p in v]
                             for k, v in f.NAMESPACES.items()})


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def tiny_model(folder: Path) -> Path:
    """A random-weight 1-layer BERT (hidden 32) with the all-MiniLM-L6-v2 tokenizer, seeded."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    import transformers

    from attnsift.retrieval.encoders import resolve_model

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64)
    transformers.BertModel(cfg).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(resolve_model("minilm")[1]).save_pretrained(folder)
    return folder


def hash_encoder(model: str, max_length: int):
    """An attnsift Encoder whose vectors are the texts' BLAKE2b digests (normalised), no model run."""
    import numpy as np

    from attnsift.retrieval.encoders import Encoder

    class HashEncoder(Encoder):
        def _encode(self, texts, is_query, want, progress):
            texts = self._prepare(texts, is_query)
            raw = b"".join(hashlib.blake2b(t.encode("utf-8"), digest_size=self.dim).digest() for t in texts)
            vec = np.frombuffer(raw, np.uint8).reshape(len(texts), self.dim).astype(np.float32) - 127.5
            vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-9)
            return vec, [v[None] for v in vec] if want != "pooled" else []

    return HashEncoder(model, device="cpu", batch_size=256, max_length=max_length)


def step_build(args) -> dict:
    from attnsift.eval.datasets import load_dataset
    from attnsift.retrieval.dense import DenseRetriever

    ds = load_dataset(args.collection, split="dev.small")
    enc = hash_encoder(args.model, args.max_length)
    out = {"rss_start_mb": _rss_mb(), "peak_start_mb": _peak_mb(), "status_start_mb": _status_mb()}
    anon = _AnonPeak()
    t0 = time.perf_counter()
    r = DenseRetriever.from_corpus(ds.corpus, encoder=enc, index_type=args.index_type, progress=False)
    out.update(build_s=round(time.perf_counter() - t0, 1), rss_built_mb=_rss_mb(), peak_build_mb=_peak_mb(),
               status_built_mb=_status_mb(), peak_anon_build_mb=anon.read(),
               docs=r.num_docs, index_bytes=r.index_bytes(), documents_held=type(r.documents).__name__)
    t0 = time.perf_counter()
    path = r.save(args.index, overwrite=True)
    out.update(save_s=round(time.perf_counter() - t0, 1), peak_save_mb=_peak_mb(), peak_anon_save_mb=anon.read(),
               files={p.name: p.stat().st_size for p in sorted(path.iterdir())},
               sha256={n: _sha(path / n) for n in ("index.faiss", "documents.jsonl", "doc_ids.json")})
    return out


def step_load(args) -> dict:
    from attnsift.eval.datasets import load_dataset
    from attnsift.retrieval.dense import DenseRetriever

    queries = list(load_dataset(args.collection, split="dev.small").queries.values())[:100]
    enc = hash_encoder(args.model, args.max_length)
    out = {"rss_start_mb": _rss_mb(), "status_start_mb": _status_mb()}
    anon = _AnonPeak()
    t0 = time.perf_counter()
    r = DenseRetriever.load(args.index, encoder=enc)
    out.update(load_s=round(time.perf_counter() - t0, 1), rss_loaded_mb=_rss_mb(), peak_load_mb=_peak_mb(),
               status_loaded_mb=_status_mb(), peak_anon_load_mb=anon.read(), documents_held=type(r.documents).__name__)
    t0 = time.perf_counter()
    run = r.retrieve_batch(queries, k=100, progress=False)
    texts = hashlib.sha256(json.dumps([[(c.doc_id, round(c.score, 5), c.document.text) for c in run[q.id]]
                                       for q in queries]).encode()).hexdigest()
    out.update(search_s=round(time.perf_counter() - t0, 2), rss_searched_mb=_rss_mb(), peak_mb=_peak_mb(),
               status_searched_mb=_status_mb(), peak_anon_mb=anon.read(), rankings_sha256=texts)
    return out


def _child(args, step: str, code: str | None, index: Path, cache: Path) -> dict:
    cmd = [sys.executable, str(HERE), "--_step", step, "--collection", args.collection, "--work", args.work,
           "--index-type", args.index_type, "--max-length", str(args.max_length), "--_index", str(index),
           "--_model", str(Path(args.work) / "tiny-bert")]
    if code:
        cmd += ["--_code", code]
    env = {**os.environ, "ATTNSIFT_CACHE": str(cache), "ATTNSIFT_PROGRESS": "0", "OMP_NUM_THREADS": "2"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"step {step} ({code or 'after'}) failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"], out["loadavg"] = round(time.perf_counter() - t0, 1), [round(x, 2) for x in os.getloadavg()]
    print(step, code or "after", json.dumps(out), file=sys.stderr, flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--collection", required=True, help="folder of an MS MARCO-format collection")
    p.add_argument("--work", required=True, help="scratch folder (indexes, caches, the tiny model)")
    p.add_argument("--before", help="a checkout of the earlier code (git worktree); without it: after only")
    p.add_argument("--index-type", default="flat", choices=["flat", "ivfpq"])
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--out", default=str(RESULTS / "dense_memory"))
    p.add_argument("--_step", help=argparse.SUPPRESS)
    p.add_argument("--_code", help=argparse.SUPPRESS)
    p.add_argument("--_index", help=argparse.SUPPRESS)
    p.add_argument("--_model", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._step:
        _use_code(args._code)
        args.index, args.model = args._index, args._model
        print(json.dumps({"build": step_build, "load": step_load}[args._step](args)))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tiny_model(work / "tiny-bert")
    codes = {"before": args.before, "after": None} if args.before else {"after": None}
    res: dict = {"command": " ".join(sys.argv), "collection": args.collection, "index_type": args.index_type,
                 "encoder": "hash encoder (BLAKE2b digest of each text, 32 dimensions; the name and configuration "
                            "of a random 1-layer BERT folder)",
                 "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                 "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "build": {}, "load": {}}
    for label, code in codes.items():
        res["build"][label] = _child(args, "build", code, work / f"index-{label}", work / f"cache-{label}")
    for label, code in codes.items():
        for of in codes:
            res["load"][f"{label} code, {of} index"] = _child(args, "load", code, work / f"index-{of}",
                                                              work / f"cache-{label}")
    Path(args.out + ".json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
