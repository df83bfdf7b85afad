"""The CLI and the Python API are one runner: `attnsift rerank --save-run F` and the equivalent
`write_run(Pipeline(...).run(...), F)` write byte-identical files (BM25 + ICR, 10 SciFact queries)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("transformers")

from attnsift.cli.main import app  # noqa: E402
from attnsift.trec import write_run  # noqa: E402

runner = CliRunner()


def test_cli_rerank_and_pipeline_write_the_same_bytes(data_dir: Path, tiny_model_dir: Path, tmp_path: Path):
    from attnsift import Pipeline, first_stage, load_dataset
    from attnsift.registry import build_reranker

    cli_file, py_file = tmp_path / "cli.trec", tmp_path / "py.trec"
    res = runner.invoke(app, ["rerank", "--dataset", "scifact", "--retriever", "bm25", "--reranker", "icr",
                              "--model", str(tiny_model_dir), "--first-stage-k", "30", "--depth", "5",
                              "--max-queries", "10", "--option", "max_words=30", "--save-run", str(cli_file), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["system"] == "bm25+icr" and out["depth"] == 5 and out["first_stage_k"] == 30 and out["k"] is None

    ds = load_dataset("scifact").subset(max_queries=10)
    icr = build_reranker("icr", model=str(tiny_model_dir), options={"max_words": "30"})
    run = Pipeline(first_stage(ds, "bm25"), icr, first_stage_k=30, depth=5, corpus=ds.corpus).run(ds.queries)
    write_run(run, py_file)

    lines = cli_file.read_text().splitlines()
    assert len(lines) == 10 * 30 and lines[0].endswith(" bm25+icr")
    assert cli_file.read_bytes() == py_file.read_bytes()
    # the reranker moved something: the file is not just BM25's order
    bm25 = Pipeline(first_stage(ds, "bm25"), first_stage_k=30).run(ds.queries)
    assert any(run[q].doc_ids[:5] != bm25[q].doc_ids[:5] for q in run)
    assert all(run[q].doc_ids[5:] == bm25[q].doc_ids[5:] for q in run)  # below depth: first-stage order
