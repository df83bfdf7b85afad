"""Acceptance figures of the foundation, measured through the CLI exactly as a user runs it.

    python benchmarks/foundation.py            # writes benchmarks/results/foundation.{md,json}

Runs (each a subprocess, JSON output parsed):
  attnsift evaluate --dataset dl19 --run <provided BM25 run> --json       (Anserini: nDCG@10 0.5058)
  attnsift evaluate --dataset dl19 --run <provided SPLADE++ run> --json   (Anserini: 0.7308)
  attnsift rerank --dataset scifact --retriever bm25 --json                (pyserini flat: 0.679)
  attnsift rerank --dataset nfcorpus --retriever bm25 --json               (pyserini flat: 0.322)
and the wall time of `attnsift --help` (best of 5).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

TARGETS = {  # (metric, floor, published reference)
    "dl19 BM25 run": ("nDCG@10", 0.5058, 0.5058),
    "dl19 SPLADE++ run": ("nDCG@10", 0.7308, 0.7308),
    "scifact BM25": ("nDCG@10", 0.670, 0.679),
    "nfcorpus BM25": ("nDCG@10", 0.315, 0.322),
}


def _attnsift() -> str:
    exe = shutil.which("attnsift", path=str(Path(sys.executable).parent)) or shutil.which("attnsift")
    if exe is None:
        raise SystemExit("attnsift is not installed in this environment: run `make install` first")
    return exe


def _run(args: list[str]) -> tuple[dict, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([_attnsift(), *args], capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed: attnsift {' '.join(args)}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout), secs


def main() -> None:
    data = Path(os.environ.get("ATTNSIFT_DATA", HERE.parent.parent / "shared" / "data"))
    runs = data / "trec-dl19-passage" / "runs"
    cases = {
        "dl19 BM25 run": ["evaluate", "--dataset", "dl19", "--run", str(runs / "bm25_flat.top100.trec"), "--json"],
        "dl19 SPLADE++ run": ["evaluate", "--dataset", "dl19", "--run", str(runs / "splade_pp_ed.top100.trec"), "--json"],
        "scifact BM25": ["rerank", "--dataset", "scifact", "--retriever", "bm25", "--json"],
        "nfcorpus BM25": ["rerank", "--dataset", "nfcorpus", "--retriever", "bm25", "--json"],
    }
    rows = {}
    for name, args in cases.items():
        out, secs = _run(args)
        metric, floor, ref = TARGETS[name]
        rows[name] = {"command": "attnsift " + " ".join(a.replace(str(data), "$ATTNSIFT_DATA") for a in args),
                      "nDCG@10": out["nDCG@10"], "MRR@10": out["MRR@10"], "R@100": out["R@100"], "AP": out["AP"],
                      "queries": out["num_queries"], "wall_s": round(secs, 2), "floor": floor, "published": ref,
                      "pass": out[metric] >= floor - 5e-5}
        print(f"{name:20s} nDCG@10={out['nDCG@10']:.4f} R@100={out['R@100']:.4f} ({secs:.1f}s)", file=sys.stderr)
    helps = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([_attnsift(), "--help"], capture_output=True, check=True)
        helps.append(time.perf_counter() - t0)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, no GPU"
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result = {"date": stamp, "machine": machine, "command": "python benchmarks/foundation.py",
              "cases": rows, "help_seconds_best_of_5": round(min(helps), 3)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    from attnsift.io import atomic_write_json, atomic_write_text

    atomic_write_json(RESULTS / "foundation.json", result)
    lines = [
        "# Foundation acceptance figures",
        "",
        f"Command: `python benchmarks/foundation.py` — {stamp} — {machine} (2-core CPU VM, 24 GB RAM).",
        "Each row is one CLI command run as a subprocess; the numbers are parsed from its `--json` output.",
        "",
        "| case | nDCG@10 | MRR@10 | R@100 | AP | queries | floor | published | pass | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['nDCG@10']:.4f} | {r['MRR@10']:.4f} | {r['R@100']:.4f} | {r['AP']:.4f} | "
                     f"{r['queries']} | {r['floor']} | {r['published']} | {'yes' if r['pass'] else 'NO'} | {r['wall_s']} |")
    lines += ["", "Commands:", ""] + [f"- {name}: `{r['command']}`" for name, r in rows.items()]
    lines += ["", f"`attnsift --help`: {min(helps):.3f} s (best of 5 wall-clock runs, subprocess start included).",
              "", "DL19 binary measures (MRR, R, AP) count grade >= 2 as relevant (TREC DL convention); nDCG uses the grades."]
    atomic_write_text(RESULTS / "foundation.md", "\n".join(lines) + "\n")
    print((RESULTS / "foundation.md").read_text())


if __name__ == "__main__":
    main()
