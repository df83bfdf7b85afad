"""What the driver holds and sends when a dense index is encoded on Ray: texts sent from the driver (the
old path, still the one for texts in memory) against shard descriptors the workers read themselves.

Each mode runs in its own driver process (so its peak RSS is its own), on the same corpus, one after
the other, repeated (interleaved) ``--repeats`` times:

- ``texts``: the driver reads the corpus, keeps its texts and sends every chunk's texts to the workers
  (what ``attnsift index --engine ray`` did before the workers read their shards);
- ``shards``: the driver plans shard descriptors in one streamed pass; the workers read their texts;
- ``local`` (``--local``): the same build in this process, for the index's sha256.

Every mode then builds the dense index (``build_index(..., encoder=engine_encoder(...))``, no encoding
cache) and records: wall seconds, the plan's seconds and RSS growth, the driver's peak RSS, the bytes
and texts sent to the workers (:attr:`RayEngine.sent`), and the sha256 of the saved ``index.faiss``.

Usage::

    python benchmarks/synthetic_msmarco.py --passages 30000 --queries 10 --top1000-queries 0 --out DIR/msmarco-passage
    ATTNSIFT_DATA=DIR flock /tmp/attnsift-heavy.lock python benchmarks/ray_encoding.py --dataset msmarco \\
        --encoder minilm --out benchmarks/results/ray_encoding.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_mode(mode: str, dataset: str, encoder: str, workers: int) -> dict:
    """One build in this process; returns its figures."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from attnsift.documents import corpus_record
    from attnsift.engines.encoding import engine_encoder
    from attnsift.engines.ray import RayEngine
    from attnsift.eval.datasets import load_dataset
    from attnsift.registry import build_index
    from attnsift.retrieval.encoders import Encoder

    import torch

    torch.set_num_threads(workers)
    ds = load_dataset(dataset)
    t0 = time.perf_counter()
    engine = None
    if mode == "local":
        rss0 = _rss_mb()
        enc, plan_s, plan_mb = Encoder(encoder), 0.0, 0.0
    else:
        engine = RayEngine(num_workers=workers).start()
        local = Encoder(encoder)
        rss0 = _rss_mb()
        t1 = time.perf_counter()
        if mode == "texts":  # the old CLI: every text read here, then sent
            enc = engine_encoder(local, engine, [d.contents for d in corpus_record(ds)[0]])
        else:
            enc = engine_encoder(local, engine, ds)
        plan_s, plan_mb = time.perf_counter() - t1, _rss_mb() - rss0
    t2 = time.perf_counter()
    index = build_index(ds, "dense", encoder=enc, options={"cache": False})
    build_s = time.perf_counter() - t2
    with tempfile.TemporaryDirectory() as tmp:
        path = index.save(Path(tmp) / "index")
        sha = hashlib.sha256((path / "index.faiss").read_bytes()).hexdigest()
    out = {"mode": mode, "docs": index.num_docs, "wall_s": round(time.perf_counter() - t0, 2),
           "plan_s": round(plan_s, 2), "build_s": round(build_s, 2), "plan_rss_growth_mb": round(plan_mb, 1),
           "driver_rss_before_plan_mb": round(rss0, 1),
           "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "sent": dict(engine.sent) if engine is not None else None, "index_sha256": sha,
           "loadavg": [round(x, 2) for x in os.getloadavg()]}
    if engine is not None:
        engine.close()
    return out


def _tiny_encoder(folder: Path) -> str:
    import torch
    import transformers

    from attnsift.retrieval.encoders import resolve_model

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64)
    transformers.BertModel(cfg).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(resolve_model("minilm")[1]).save_pretrained(folder)
    return str(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="msmarco", help="a data set name ($ATTNSIFT_DATA) or BEIR folder")
    ap.add_argument("--encoder", default="minilm", help="an encoder, or tiny (a random 1-layer BERT, made here)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--local", action="store_true", help="also build locally (the index's sha256 to compare)")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    ap.add_argument("--mode", help=argparse.SUPPRESS)  # a child process: one build
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.dataset, args.encoder, args.workers)))
        return
    modes = ["texts", "shards"] + (["local"] if args.local else [])
    keep, asked = tempfile.TemporaryDirectory(), args.encoder
    if args.encoder == "tiny":  # a random 1-layer BERT (hidden 32) with MiniLM's tokenizer: the driver's side
        args.encoder = _tiny_encoder(Path(keep.name) / "tiny-encoder")  # is measured, not the model's speed
    runs = []
    for rep in range(args.repeats):
        for mode in modes:
            cmd = [sys.executable, __file__, "--mode", mode, "--dataset", args.dataset, "--encoder", args.encoder,
                   "--workers", str(args.workers)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                sys.exit(f"{mode} failed:\n{res.stderr[-3000:]}")
            fig = json.loads(res.stdout.strip().splitlines()[-1])
            fig["repeat"] = rep
            runs.append(fig)
            print(json.dumps(fig), flush=True)
    import platform

    import torch

    out = {"command": " ".join(sys.argv), "dataset": args.dataset, "encoder": asked, "workers": args.workers,
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
           "runs": runs, "same_index": len({r["index_sha256"] for r in runs}) == 1}
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"same_index": out["same_index"]}))


if __name__ == "__main__":
    main()
