"""A dense IVF-PQ index with a refine stage through the CLI: ``index --retriever-option refine=sq8``, then
``rerank --index ... --retriever-option k_factor=...`` on a tiny BEIR folder (MiniLM, offline)."""
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("faiss")
pytest.importorskip("sentence_transformers")

from helpers import TINY_DOCS, write_tiny_beir  # noqa: E402

from attnsift.cli.main import app  # noqa: E402

runner = CliRunner()
FILLER = {f"f{i}": (f"Filler {i}", f"An unrelated note number {i} about {topic}.")
          for i, topic in enumerate(["weather", "trains", "music", "cooking", "gardens", "chess"] * 7)}


@pytest.fixture(scope="module")
def beir(tmp_path_factory) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("refine") / "tiny", docs={**TINY_DOCS, **FILLER})


def test_index_with_refine_then_rerank_with_k_factor(beir: Path, tmp_path: Path):
    idx = tmp_path / "dense-refine"
    res = runner.invoke(app, ["index", "--dataset", str(beir), "--retriever", "dense", "--device", "cpu", "--out", str(idx),
                              "--retriever-option", "index=ivfpq", "--retriever-option", "nlist=2",
                              "--retriever-option", "m=16", "--retriever-option", "refine=sq8",
                              "--retriever-option", "cache=false"])
    assert res.exit_code == 0, res.output
    params = json.loads((idx / "manifest.json").read_text())["index"]["params"]
    assert params["refine"] == "sq8" and params["k_factor"] == 8
    scores = {}
    for kf in ("1", "8"):
        res = runner.invoke(app, ["rerank", "--dataset", str(beir), "--index", str(idx), "--reranker", "none",
                                  "--first-stage-k", "5", "--retriever-option", f"k_factor={kf}", "--json"])
        assert res.exit_code == 0, res.output
        scores[kf] = json.loads(res.stdout)
    assert scores["8"]["num_queries"] == 3
    assert scores["8"]["MRR@10"] == 1.0  # 40 of 50 candidates re-scored: each query's best document first
    assert scores["8"]["nDCG@10"] != scores["1"]["nDCG@10"]  # the search-time option reached the index
    bad = runner.invoke(app, ["rerank", "--dataset", str(beir), "--index", str(idx), "--reranker", "none",
                              "--retriever-option", "k_factor=0", "--json"])
    assert bad.exit_code == 2 and "k_factor" in bad.output and "expected an integer >= 1" in bad.output


def test_refine_needs_ivfpq_one_line_error(beir: Path, tmp_path: Path):
    res = runner.invoke(app, ["index", "--dataset", str(beir), "--retriever", "dense", "--out", str(tmp_path / "x"),
                              "--retriever-option", "refine=sq8"])
    assert res.exit_code == 2
    assert "refine=sq8 re-scores an IVF-PQ index's candidates; got index_type='flat'" in res.output
    assert not (tmp_path / "x").exists()
