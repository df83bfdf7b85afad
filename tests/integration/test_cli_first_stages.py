"""Every first stage through the CLI on a tiny BEIR folder: dense, late interaction, hybrid; index + retrieve."""
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("faiss")
pytest.importorskip("transformers")

from helpers import write_tiny_beir  # noqa: E402

from attnsift.cli.main import app  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def beir(tmp_path_factory) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.mark.parametrize("retriever, options", [("dense", []), ("late", []), ("hybrid", []),
                                                ("hybrid", ["--retriever-option", "method=score"])])
def test_first_stages_rank_the_obvious_answers_first(beir: Path, retriever, options):
    res = runner.invoke(app, ["rerank", "--dataset", str(beir), "--retriever", retriever, "--first-stage-k", "5",
                              "--json", *options])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["num_queries"] == 3
    assert out["MRR@10"] == 1.0  # every query's best document is unambiguous
    assert out["nDCG@10"] > 0.9


def test_dense_index_then_retrieve_and_mismatch(beir: Path, tmp_path: Path):
    idx = tmp_path / "dense"
    res = runner.invoke(app, ["index", "--dataset", str(beir), "--retriever", "dense", "--out", str(idx)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["retrieve", "--index", str(idx), "--retriever", "dense", "--query", "sailors disease",
                              "-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["queries"][0]["results"][0]["doc_id"] == "d1"
    # a dense index is not a BM25 index: a clear error, not garbage
    res = runner.invoke(app, ["retrieve", "--index", str(idx), "--retriever", "bm25", "--query", "x"])
    assert res.exit_code == 2 and "index" in res.output.lower()
