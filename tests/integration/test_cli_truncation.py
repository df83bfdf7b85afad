"""The CLI says when a reranker cut documents: one ``warning:`` line per run, and the figure in --json."""
from __future__ import annotations

import json
from pathlib import Path

from helpers import write_tiny_beir
from typer.testing import CliRunner

from attnsift.cli.main import app

runner = CliRunner()


def test_rerank_reports_cut_documents_once(tmp_path: Path, tiny_model_dir: Path):
    beir = write_tiny_beir(tmp_path / "tiny")
    res = runner.invoke(app, ["rerank", "--dataset", str(beir), "--reranker", "icr", "--model", str(tiny_model_dir),
                              "--first-stage-k", "4", "--option", "max_words=3", "--json"])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stderr.splitlines() if line.startswith("warning: icr cut")]
    assert len(lines) == 1, res.stderr  # three queries, one line
    assert "to 3 words" in lines[0] and "--option max_words=" in lines[0]
    out = json.loads(res.stdout)
    t = out["truncation"]
    assert t["unit"] == "words" and t["limit"] == 3 and 0 < t["cut"] <= t["documents"] <= 12
    # without a cut there is no line, and the figure says 0
    res = runner.invoke(app, ["rerank", "--dataset", str(beir), "--reranker", "icr", "--model", str(tiny_model_dir),
                              "--first-stage-k", "4", "--option", "max_words=50", "--json"])
    assert res.exit_code == 0 and "warning: icr cut" not in res.stderr
    assert json.loads(res.stdout)["truncation"]["cut"] == 0
