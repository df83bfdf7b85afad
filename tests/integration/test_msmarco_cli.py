"""`attnsift rerank --dataset msmarco` offline, on a synthetic collection in the official format placed in
``$ATTNSIFT_DATA/msmarco-passage/`` (written by attnsift.eval.datasets.synthetic_msmarco)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest



def _rerank(tmp_path: Path, passages: int, *extra: str) -> dict:
    data = tmp_path / "data"
    gen = subprocess.run([sys.executable, "-m", "attnsift.eval.datasets.synthetic_msmarco", "--passages", str(passages), "--queries", "100", "--out",
                          str(data / "msmarco-passage"), "--top1000-queries", "60", "--top1000-depth", "100", *extra],
                         capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr[-2000:]
    if "--tar" in extra:  # as downloaded: only the archives
        for name in ("collection.tsv", "queries.dev.small.tsv", "qrels.dev.small.tsv", "top1000.dev.tsv"):
            (data / "msmarco-passage" / name).unlink()
    env = {**os.environ, "ATTNSIFT_DATA": str(data), "ATTNSIFT_CACHE": str(tmp_path / "cache"),
           "ATTNSIFT_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "attnsift.cli.main", "rerank", "--dataset", "msmarco", "--retriever", "bm25",
           "--max-queries", "50", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["dataset"] == "msmarco" and out["num_queries"] == 50
    assert 0.5 < out["MRR@10"] <= 1.0 and out["R@100"] >= out["MRR@10"]
    run = subprocess.run(cmd[:-5] + ["--run", "top1000", "--max-queries", "50", "--json"], capture_output=True,
                         text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    provided = json.loads(run.stdout)
    assert provided["num_queries"] == 50 and provided["R@100"] == 1.0  # the relevant passage is among the 100
    return out


def test_rerank_msmarco_bm25_offline_2k(tmp_path):
    _rerank(tmp_path, 2000)


@pytest.mark.slow
def test_rerank_msmarco_bm25_offline_20k_from_tar_gz(tmp_path):
    out = _rerank(tmp_path, 20_000, "--tar")
    assert out["MRR@10"] > 0.8
