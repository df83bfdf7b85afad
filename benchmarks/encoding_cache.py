"""Encoding cache benchmark: a dense first stage built twice on the same corpus, in two fresh processes.

The first process encodes the corpus (cache miss) and leaves the encodings in the content-keyed cache
folder; the second finds them and only loads the encoder, reads the vectors and builds the faiss index.
Each process times, separately: importing attnsift, loading the data set, loading the encoder, and
``DenseRetriever.from_corpus`` with the loaded encoder (encoding or cache read + faiss build + probe),
then one query.

    ATTNSIFT_DATA=/work/shared/data .venv/bin/python benchmarks/encoding_cache.py \\
        --dataset nfcorpus --out benchmarks/results/encoding_cache.md

``--cache`` (default: a new temporary folder) is used as ``$ATTNSIFT_CACHE`` for both processes, so
the first run really encodes. Writes ``<out>`` (markdown) and ``<out minus .md>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(dataset: str, encoder: str) -> dict:
    """Time one build in this process (called in a child process)."""
    t0 = time.perf_counter()
    import attnsift
    from attnsift.retrieval.dense import DenseRetriever
    from attnsift.retrieval.encoders import Encoder

    t1 = time.perf_counter()
    corpus = attnsift.load_dataset(dataset).corpus
    docs = list(corpus.iter_documents())
    t2 = time.perf_counter()
    enc = Encoder(encoder)
    t3 = time.perf_counter()
    r = DenseRetriever.from_corpus(docs, encoder=enc, progress=True)
    t4 = time.perf_counter()
    ranking = r.retrieve("vitamin D and bone health", k=10)
    t5 = time.perf_counter()
    return {
        "docs": len(docs),
        "import_s": t1 - t0,
        "load_dataset_s": t2 - t1,
        "load_encoder_s": t3 - t2,
        "from_corpus_s": t4 - t3,
        "encode_or_cache_read_s": r.stats["encode_s"],
        "faiss_build_s": r.stats["index_s"],
        "first_query_s": t5 - t4,
        "total_s": t5 - t0,
        "top1": ranking.doc_ids[0],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="nfcorpus")
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--cache", default=None, help="$ATTNSIFT_CACHE for both runs (default: a new temporary folder)")
    ap.add_argument("--out", default="benchmarks/results/encoding_cache.md")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(one_run(args.dataset, args.encoder)))
        return 0
    cache = Path(args.cache or tempfile.mkdtemp(prefix="attnsift-encoding-cache-"))
    env = {**os.environ, "ATTNSIFT_CACHE": str(cache)}
    runs = []
    for label in ("first run (encodes)", "second run (cache hit)"):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", "--dataset", args.dataset, "--encoder", args.encoder],
                              env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["process_wall_s"] = wall
        res["label"] = label
        res["stderr_progress"] = [ln for ln in proc.stderr.splitlines() if ln.strip()][-4:]
        runs.append(res)
        print(label, json.dumps(res), file=sys.stderr)
    cache_mb = sum(p.stat().st_size for p in (cache / "encodings").rglob("*") if p.is_file()) / 1e6
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cmd = f"ATTNSIFT_DATA=/work/shared/data .venv/bin/python benchmarks/encoding_cache.py --dataset {args.dataset} --encoder {args.encoder} --out {args.out}"
    rows = ["import_s", "load_dataset_s", "load_encoder_s", "encode_or_cache_read_s", "faiss_build_s", "from_corpus_s",
            "first_query_s", "total_s", "process_wall_s"]
    lines = [
        f"# Encoding cache: dense first stage on {args.dataset} ({runs[0]['docs']} documents, encoder {args.encoder})",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {os.cpu_count()}-core {cpu} VM, no GPU; torch on the CPU, float32. Each run is a fresh process;",
        f"both share one `$ATTNSIFT_CACHE` (empty before the first run). Cache size after: {cache_mb:.1f} MB.",
        "",
        "| seconds | " + " | ".join(r["label"] for r in runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    for key in rows:
        lines.append(f"| {key} | " + " | ".join(f"{r[key]:.2f}" for r in runs) + " |")
    lines += [
        "",
        f"Same top-1 document for the probe query in both runs: {runs[0]['top1'] == runs[1]['top1']} ({runs[0]['top1']}).",
        "",
        "`from_corpus_s` = encoding (or reading the cached vectors) + faiss build + the probe vector;",
        "`load_encoder_s` = `Encoder(name)` (imports torch/transformers on first use and reads the weights);",
        "`process_wall_s` includes the interpreter start.",
        "",
        "Progress lines of the second run (stderr):",
        "",
        *[f"    {ln}" for ln in runs[1]["stderr_progress"]],
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from attnsift.io import atomic_file

    with atomic_file(out, "w") as fh:
        fh.write("\n".join(lines))
    with atomic_file(out.with_suffix(".json"), "w") as fh:
        json.dump({"command": cmd, "machine": f"{os.cpu_count()}-core {cpu}", "runs": runs, "cache_mb": cache_mb}, fh, indent=2)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
