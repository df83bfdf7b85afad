"""A cross-encoder row in a `bench quality` results table, beside BM25 (a tiny random cross-encoder built
offline; a real one, e.g. cross-encoder/ms-marco-MiniLM-L6-v2, runs the same way where a user has it)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from helpers import write_tiny_cross_encoder  # noqa: E402


def test_bench_quality_has_a_cross_encoder_row_with_seconds_per_query(tmp_path: Path, data_dir: Path):
    from typer.testing import CliRunner

    from attnsift.cli.main import app

    ce = write_tiny_cross_encoder(tmp_path / "tiny-ce")
    spec = f"bm25+cross-encoder:{ce}[depth=5]"
    out = tmp_path / "bench"
    args = ["bench", "quality", "--dataset", "scifact", "--systems", f"bm25,{spec}", "--max-queries", "3",
            "--out", str(out), "--no-plots", "--device", "auto"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = {r["system"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    label = next(s for s in rows if "cross-encoder" in s)
    assert label == f"bm25+cross-encoder:{ce}@5"
    row = rows[label]
    assert row["num_queries"] == 3 and 0.0 <= row["nDCG@10"] <= 1.0
    assert row["seconds_per_query"] > rows["bm25"]["seconds_per_query"]  # the reranking is timed per query
    assert row["spec"]["reranker"] == {"name": "cross-encoder", "model": str(ce), "options": {}}
    table = (out / "results.md").read_text()
    line = next(x for x in table.splitlines() if x.startswith(f"| {label} |"))
    assert line.count("|") == 5 and "--device auto" in table
    # The model's files are part of the key: the same spec over a changed model is computed again.
    config = json.loads(next((out / "scifact").glob("*cross-encoder*/*/config.json")).read_text())
    assert config["reranker_files"] is not None
    # A rerun finds everything done (same key), and a missing model stops before any work.
    assert CliRunner().invoke(app, args).exit_code == 0
    bad = CliRunner().invoke(app, ["bench", "quality", "--dataset", "scifact", "--systems", "bm25+cross-encoder",
                                   "--out", str(tmp_path / "other")])
    assert bad.exit_code == 2 and "needs a model" in bad.stderr and not (tmp_path / "other").exists()
