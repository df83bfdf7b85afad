"""A user's own documents through the CLI: index --input (jsonl, tsv, folder of .txt, corpus-only folder), search
--index with and without a reranker, retrieve --index of a hybrid index, datasets --path, the --model deprecation."""
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnsift.cli.main import app

runner = CliRunner()
DOCS = [("scurvy", "Scurvy", "Vitamin C deficiency causes scurvy in sailors."),
        ("citrus", None, "Lemons and limes contain ascorbic acid."),
        ("granite", None, "Granite is an igneous rock."),
        ("bones", "Bones", "Vitamin D helps calcium absorption for bone density."),
        ("stars", None, "Stars fuse hydrogen into helium.")]


@pytest.fixture()
def docs_jsonl(tmp_path: Path) -> Path:
    p = tmp_path / "docs.jsonl"
    p.write_text("".join(json.dumps({"id": i, "title": t, "text": x}) + "\n" for i, t, x in DOCS))
    return p


def _index(*args: str):
    res = runner.invoke(app, ["index", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_index_input_jsonl_then_search(docs_jsonl: Path, tmp_path: Path):
    out = _index("--input", str(docs_jsonl), "--out", str(tmp_path / "idx"))
    assert out["retriever"] == "bm25" and out["docs"] == 5 and out["encoder"] is None
    res = runner.invoke(app, ["search", "--index", str(tmp_path / "idx"), "what causes scurvy", "-q", "helium stars",
                              "-k", "2"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == "# what causes scurvy" and lines[1].split()[2] == "scurvy" and "Scurvy Vitamin C" in lines[1]
    assert "# helium stars" in lines and lines[lines.index("# helium stars") + 1].split()[2] == "stars"
    res = runner.invoke(app, ["search", "--index", str(tmp_path / "idx"), "vitamin", "--json"])
    got = json.loads(res.stdout)
    assert got["retriever"] == "bm25" and {r["doc_id"] for r in got["queries"][0]["results"]} == {"scurvy", "bones"}


@pytest.mark.parametrize("layout", ["tsv", "txt-folder", "corpus-only-folder"])
def test_index_other_layouts(tmp_path: Path, layout):
    if layout == "tsv":
        src = tmp_path / "docs.tsv"
        src.write_text("id\ttext\n" + "".join(f"{i}\t{x}\n" for i, _, x in DOCS))
        args = ["--input", str(src)]
    elif layout == "txt-folder":
        src = tmp_path / "notes"
        src.mkdir()
        for i, _, x in DOCS:
            (src / f"{i}.txt").write_text(x)
        args = ["--input", str(src)]
    else:  # a BEIR-like folder with only corpus.jsonl: --dataset used to refuse it for lacking queries and qrels
        src = tmp_path / "mydocs"
        src.mkdir()
        (src / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": x}) + "\n" for i, _, x in DOCS))
        args = ["--dataset", str(src)]
    out = _index(*args, "--out", str(tmp_path / "idx"))
    assert out["docs"] == 5
    res = runner.invoke(app, ["search", "--index", str(tmp_path / "idx"), "igneous rock", "-k", "1", "--json"])
    assert json.loads(res.stdout)["queries"][0]["results"][0]["doc_id"] == "granite"


def test_checks_before_work(docs_jsonl: Path, tmp_path: Path):
    res = runner.invoke(app, ["index", "--input", str(tmp_path / "absent.jsonl"), "--out", str(tmp_path / "i")])
    assert res.exit_code == 2 and "no documents at" in res.output
    res = runner.invoke(app, ["index", "--out", str(tmp_path / "i")])
    assert res.exit_code == 2 and "--input" in res.output and "--dataset" in res.output
    res = runner.invoke(app, ["index", "--input", str(docs_jsonl), "--out", str(tmp_path / "i"), "--encoder", "minilm"])
    assert res.exit_code == 2 and "takes no model" in res.output and not (tmp_path / "i").exists()
    _index("--input", str(docs_jsonl), "--out", str(tmp_path / "i"))
    for args, message in ([[], "at least one query"], [["q", "-k", "0"], "--k"],
                          [["q", "--depth", "3"], "are for a reranker"],
                          [["q", "--reranker", "icr", "--option", "colour=red"], "unknown option"],
                          [["q", "--encoder", "minilm"], "takes no model"]):
        res = runner.invoke(app, ["search", "--index", str(tmp_path / "i"), *args])
        assert res.exit_code == 2 and message in res.output, (args, res.output)
    res = runner.invoke(app, ["search", "--index", str(tmp_path / "nowhere"), "q"])
    assert res.exit_code == 2 and "no index at" in res.output


def test_model_is_a_deprecated_spelling_of_encoder(docs_jsonl: Path, tmp_path: Path):
    res = runner.invoke(app, ["index", "--input", str(docs_jsonl), "--out", str(tmp_path / "i"), "--model", "minilm"])
    # the old spelling still means the encoder (here refused for BM25), with one warning line first
    assert res.exit_code == 2
    assert "warning: --model (for a first stage's encoder) is deprecated" in res.output
    assert "use --encoder" in res.output and "takes no model" in res.output


def test_datasets_path(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("ATTNSIFT_DATA", str(tmp_path))
    res = runner.invoke(app, ["datasets", "--path", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info == {"path": str(tmp_path), "source": "ATTNSIFT_DATA", "exists": True}
    res = runner.invoke(app, ["datasets", "--path"])
    assert res.stdout.strip() == f"{tmp_path}  (from $ATTNSIFT_DATA)"
    monkeypatch.setenv("ATTNSIFT_DATA", str(tmp_path / "nowhere"))
    assert "it does not exist yet" in runner.invoke(app, ["datasets", "--path"]).stdout


def test_datasets_table_fits_80_columns(data_dir: Path):
    res = runner.invoke(app, ["datasets"], env={"COLUMNS": "80", "ATTNSIFT_DATA": str(data_dir)}, terminal_width=80)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == "attnsift data sets" and all(len(line) <= 80 for line in lines), res.stdout
    assert any(line.startswith("│ scifact ") and " yes " in line and "5183" in line for line in lines)


def test_search_with_icr_reranker_tiny_model(docs_jsonl: Path, tmp_path: Path, tiny_model_dir: Path):
    _index("--input", str(docs_jsonl), "--out", str(tmp_path / "i"))
    res = runner.invoke(app, ["search", "--index", str(tmp_path / "i"), "vitamin deficiency", "--reranker", "icr",
                              "--model", str(tiny_model_dir), "--depth", "3", "-k", "2", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    results = got["queries"][0]["results"]
    assert got["reranker"] == "icr" and len(results) == 2
    assert {r["doc_id"] for r in results} <= {"scurvy", "bones", "citrus"}  # reranked among the first stage's top 3
    # the model's pass is long on a CPU: one step line says what runs, and when it is done (stdout stays JSON)
    assert "icr reranks the top 3 for 'vitamin deficiency'" in res.stderr and "done in" in res.stderr


def test_hybrid_index_then_retrieve_and_search(docs_jsonl: Path, tmp_path: Path):
    pytest.importorskip("faiss")
    out = _index("--input", str(docs_jsonl), "--out", str(tmp_path / "h"), "--retriever", "hybrid",
                 "--encoder", "minilm", "--device", "cpu")
    assert out["retriever"] == "hybrid" and "MiniLM" in out["encoder"]
    res = runner.invoke(app, ["retrieve", "--index", str(tmp_path / "h"), "-q", "sailors disease", "-k", "2", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["queries"][0]["results"][0]["doc_id"] == "scurvy"
    res = runner.invoke(app, ["retrieve", "--index", str(tmp_path / "h"), "--retriever", "bm25", "-q", "x"])
    assert res.exit_code == 2 and "is a 'hybrid' index but --retriever is 'bm25'" in res.output


def test_first_stage_options_are_retriever_options(docs_jsonl: Path, tmp_path: Path):
    """index/retrieve take --retriever-option like rerank (--option is the reranker's everywhere); the
    old --option spelling still works there, with one deprecation line."""
    res = runner.invoke(app, ["index", "--input", str(docs_jsonl), "--out", str(tmp_path / "a"),
                              "--retriever-option", "k1=1.2", "--retriever-option", "b=0.75"])
    assert res.exit_code == 0, res.output
    assert "deprecated" not in res.stderr
    res = runner.invoke(app, ["index", "--input", str(docs_jsonl), "--out", str(tmp_path / "b"), "--option", "k1=1.2"])
    assert res.exit_code == 0, res.output
    assert res.stderr.count("warning: --option for first-stage options") == 1 and "--retriever-option" in res.stderr
    res = runner.invoke(app, ["index", "--input", str(docs_jsonl), "--out", str(tmp_path / "c"),
                              "--retriever-option", "k1=-1"])
    assert res.exit_code == 2 and "k1 must be >= 0" in res.stderr
    a = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert json.dumps(a).count("1.2") >= 1 and "0.75" in json.dumps(a)
