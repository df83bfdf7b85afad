"""`attnsift index --dataset X` (BM25) streams the corpus into an index built in parts on disk: the very files
build_index + save write, with the data set's corpus fingerprint; the existing-folder and option checks hold."""
import hashlib
import json
from pathlib import Path

from typer.testing import CliRunner

from attnsift.cli.main import app

runner = CliRunner()
DOCS = [("scurvy", "Scurvy", "Vitamin C deficiency causes scurvy in sailors."),
        ("citrus", "", "Lemons and limes contain ascorbic acid."),
        ("granite", "", "Granite is an igneous rock."),
        ("bones", "Bones", "Vitamin D helps calcium absorption for bone density.")]


def _beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in DOCS))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "what causes scurvy"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tscurvy\t1\n")
    return root


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_index_dataset_bm25_streams_the_same_files_as_build_index(tmp_path: Path):
    from attnsift.eval.datasets import load_dataset
    from attnsift.registry import build_index

    data = _beir(tmp_path / "toy")
    res = runner.invoke(app, ["index", "--dataset", str(data), "--out", str(tmp_path / "cli"),
                              "--retriever-option", "k1=1.1"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["docs"] == 4
    ds = load_dataset(str(data))
    r = build_index(ds, "bm25", options={"k1": 1.1})
    r.save(tmp_path / "py", corpus_fingerprint=r.corpus_fingerprint, dataset=r.dataset)
    assert _digests(tmp_path / "cli") == _digests(tmp_path / "py")
    again = runner.invoke(app, ["index", "--dataset", str(data), "--out", str(tmp_path / "cli")])
    assert again.exit_code != 0 and "exists; pass --overwrite" in again.output
    bad = runner.invoke(app, ["index", "--dataset", str(data), "--out", str(tmp_path / "x"), "--retriever-option", "k9=1"])
    assert bad.exit_code != 0 and "k9" in bad.output and not (tmp_path / "x").exists()
