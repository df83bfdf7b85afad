"""The late-interaction index from the command line, faiss and compressed (plaid): index --input, search
--index with search-time options, and the option checks before any encoding."""
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnsift.cli.main import app

pytest.importorskip("faiss")
runner = CliRunner()
DOCS = [("scurvy", "Vitamin C deficiency causes scurvy in sailors."), ("citrus", "Lemons and limes contain ascorbic acid."),
        ("granite", "Granite is an igneous rock."), ("stars", "Stars fuse hydrogen into helium.")]


@pytest.mark.model
def test_index_and_search_a_plaid_late_interaction_index(tmp_path: Path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in DOCS))
    res = runner.invoke(app, ["index", "--input", str(docs), "--retriever", "late", "--retriever-option", "index=plaid",
                              "--out", str(tmp_path / "idx")])
    if res.exit_code != 0 and "minilm" in res.output.lower() and "not" in res.output.lower():
        pytest.skip("the offline MiniLM package is not installed")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["docs"] == 4
    hit = runner.invoke(app, ["search", "--index", str(tmp_path / "idx"), "what causes scurvy", "-k", "2",
                              "--retriever-option", "candidates=3", "--json"])
    assert hit.exit_code == 0, hit.output
    assert json.loads(hit.stdout)["queries"][0]["results"][0]["doc_id"] == "scurvy"
    bad = runner.invoke(app, ["search", "--index", str(tmp_path / "idx"), "scurvy", "--retriever-option", "ncentroids=3"])
    assert bad.exit_code != 0 and "ncentroids cannot change on load" in bad.output


@pytest.mark.parametrize("options, message", [
    (["index=plaid", "nlist=4"], "nlist applies to the faiss token index"),
    (["ncells=4"], "ncells applies to the compressed index; add index='plaid'"),
    (["index=plaid", "candidates=0"], "candidates must be an integer >= 1"),
])
def test_late_options_are_checked_before_encoding(tmp_path: Path, options, message):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in DOCS))
    args = ["index", "--input", str(docs), "--retriever", "late", "--out", str(tmp_path / "idx")]
    for o in options:
        args += ["--retriever-option", o]
    res = runner.invoke(app, args)
    assert res.exit_code != 0 and message in res.output, res.output
    assert not (tmp_path / "idx").exists()
