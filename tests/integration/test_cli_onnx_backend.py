"""The ONNX encoder backend from the command line: a dense index built with backend=onnx-int8 (or
onnx-int8-token) records it, its queries are encoded the same way when it is searched, and bad backend options
are refused before encoding."""
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnsift.cli.main import app

pytest.importorskip("onnxruntime")
pytest.importorskip("faiss")
runner = CliRunner()
DOCS = [("scurvy", "Vitamin C deficiency causes scurvy in sailors."), ("citrus", "Lemons and limes contain ascorbic acid."),
        ("granite", "Granite is an igneous rock."), ("stars", "Stars fuse hydrogen into helium.")]


def _docs(tmp_path: Path) -> Path:
    p = tmp_path / "docs.jsonl"
    p.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in DOCS))
    return p


@pytest.mark.model
@pytest.mark.parametrize("backend", ["onnx-int8", "onnx-int8-token"])
def test_dense_index_with_an_int8_backend_builds_records_and_searches(tmp_path: Path, backend):
    res = runner.invoke(app, ["index", "--input", str(_docs(tmp_path)), "--retriever", "dense",
                              "--retriever-option", f"backend={backend}", "--out", str(tmp_path / "idx")])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert f'"backend": "{backend}"' in json.dumps(manifest)
    hit = runner.invoke(app, ["search", "--index", str(tmp_path / "idx"), "what causes scurvy", "-k", "2", "--json"])
    assert hit.exit_code == 0, hit.output  # the query encoder is the int8 one: the probe check passes
    assert json.loads(hit.stdout)["queries"][0]["results"][0]["doc_id"] == "scurvy"


@pytest.mark.parametrize("option, message", [("backend=onnx9", "expected one of 'torch', 'onnx', 'onnx-int8'"),
                                             ("threads=0", "threads must be an integer >= 1")])
def test_bad_backend_options_are_refused_before_encoding(tmp_path: Path, option, message):
    res = runner.invoke(app, ["index", "--input", str(_docs(tmp_path)), "--retriever", "dense", "--retriever-option",
                              option, "--out", str(tmp_path / "idx")])
    assert res.exit_code != 0 and message in res.output, res.output
    assert not (tmp_path / "idx").exists()
