"""`attnsift analyze heads` end to end on a tiny model folder and a tiny BEIR folder, then the profile in
`attnsift rerank` (ICR and BlockRank)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from attnsift.cli.main import app  # noqa: E402

runner = CliRunner()
WORDS = ("vitamin cancer risk sleep memory insulin sugar blood heart diet fat fibre iron zinc protein "
         "muscle bone brain liver kidney gut bacteria virus vaccine").split()


def write_beir(root: Path) -> Path:
    rng = random.Random(0)
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"D{i}", "title": "", "text": " ".join(rng.choices(WORDS, k=12))}) + "\n" for i in range(30)))
    queries = [" ".join(rng.choices(WORDS, k=3)) for _ in range(8)]
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"Q{i}", "text": q}) + "\n" for i, q in enumerate(queries)))
    (root / "qrels").mkdir()
    rows = ["query-id\tcorpus-id\tscore"] + [f"Q{i}\tD{(3 * i + j) % 30}\t{1 + j % 2}" for i in range(8) for j in range(3)]
    for split in ("dev", "test"):
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return root


def test_analyze_heads_then_rerank_with_the_profile(tmp_path: Path, tiny_model_dir: Path):
    data = write_beir(tmp_path / "toy")
    out = tmp_path / "prof" / "icr-tiny.json"
    res = runner.invoke(app, ["analyze", "heads", "--model", str(tiny_model_dir), "--dataset", str(data), "--split", "dev",
                              "--depth", "5", "--option", "max_words=8", "--out", str(out), "--features", str(tmp_path / "feat")])
    assert res.exit_code == 0, res.output
    prof = json.loads(out.read_text())
    assert prof["reranker"] == "icr" and prof["num_layers"] == 3 and prof["num_heads"] == 2
    assert prof["selected_on"]["split"] == "dev" and prof["selected_on"]["queries"] == 8
    assert len(prof["per_head"]["raw"]) == 3 and len(prof["per_layer"]["norm"]) == 3
    assert out.with_suffix(".heads.png").stat().st_size > 1000 and out.with_suffix(".layers.png").exists()
    assert len(list((tmp_path / "feat").glob("*.npz"))) == 8
    # The selection's held-out nDCG is what ranking by those heads gives on the same queries.
    assert 0.0 <= prof["selection"]["heldout_ndcg"] <= 1.0
    res = runner.invoke(app, ["rerank", "--dataset", str(data), "--split", "test", "--reranker", "icr",
                              "--model", str(tiny_model_dir), "--depth", "5", "--option", f"heads={out}",
                              "--option", "max_words=8", "--option", "fusion=profile", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["num_queries"] == 8


def test_analyze_heads_blockrank_picks_a_scoring_layer(tmp_path: Path, tiny_model_dir: Path):
    data = write_beir(tmp_path / "toy")
    out = tmp_path / "br.json"
    res = runner.invoke(app, ["analyze", "heads", "--reranker", "blockrank", "--model", str(tiny_model_dir),
                              "--dataset", str(data), "--split", "dev", "--depth", "5", "--option", "max_words=8",
                              "--option", "block_tokens=48", "--out", str(out), "--features", str(tmp_path / "feat")])
    assert res.exit_code == 0, res.output
    prof = json.loads(out.read_text())
    curve = prof["per_layer"]["raw"]
    assert prof["reranker"] == "blockrank" and len(curve) == 3
    assert curve[prof["scoring_layer"]] == max(curve)
    res = runner.invoke(app, ["rerank", "--dataset", str(data), "--reranker", "blockrank", "--model", str(tiny_model_dir),
                              "--depth", "5", "--option", f"scoring_layer={out}", "--option", "block_tokens=48", "--json"])
    assert res.exit_code == 0, res.output


def test_analyze_heads_bad_input(tmp_path: Path, tiny_model_dir: Path):
    res = runner.invoke(app, ["analyze", "heads", "--model", str(tiny_model_dir), "--dataset", "nosuchset",
                              "--out", str(tmp_path / "p.json")])
    assert res.exit_code == 2 and "error:" in res.output
    res = runner.invoke(app, ["analyze", "heads", "--model", str(tiny_model_dir), "--dataset", str(tmp_path),
                              "--out", str(tmp_path / "p.txt")])
    assert res.exit_code == 2 and ".json" in res.output
    res = runner.invoke(app, ["analyze", "heads", "--reranker", "colbert", "--out", str(tmp_path / "p.json")])
    assert res.exit_code == 2 and "icr or blockrank" in res.output


def test_analyze_heads_options_reach_the_reranker_and_name_the_features(tmp_path: Path, tiny_model_dir: Path,
                                                                          monkeypatch, caplog):
    monkeypatch.setenv("ATTNSIFT_CACHE", str(tmp_path / "cache"))
    data = write_beir(tmp_path / "toy")
    base = ["analyze", "heads", "--reranker", "blockrank", "--model", str(tiny_model_dir), "--dataset", str(data),
            "--split", "dev", "--depth", "5", "--option", "max_words=8", "--option", "block_tokens=48"]
    curves = {}
    for opts in ([], ["--option", "query_positions=999"]):
        out = tmp_path / f"br{len(opts)}.json"
        res = runner.invoke(app, [*base, *opts, "--out", str(out)])
        assert res.exit_code == 0, res.output
        prof = json.loads(out.read_text())
        curves[len(opts)] = prof["per_layer"]["raw"]
        assert prof["selected_on"].get("options") == ({"query_positions": "999"} if opts else None)
    folders = sorted(p.name for p in (tmp_path / "cache" / "heads").iterdir())
    # Two collections, two folders: the option is in the second one's name (never mixed with the default's).
    assert len(folders) == 2 and any("query_positions" in f for f in folders)
    # Scoring from every row of the last block is another score than from its last two rows.
    assert curves[0] != curves[2]
    # A profile chosen with an option warns when it is used without it, and not when used with it.
    from attnsift.rerank.blockrank import BlockRankReranker

    for qp, warned in ((2, True), (999, False)):
        caplog.clear()
        with caplog.at_level("WARNING", logger="attnsift.rerank"):
            BlockRankReranker(str(tiny_model_dir), scoring_layer=str(tmp_path / "br2.json"), query_positions=qp)
        assert ("query_positions=999" in caplog.text) == warned, caplog.text
    res = runner.invoke(app, [*base, "--option", "heads=auto", "--out", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "every head" in res.output
    res = runner.invoke(app, [*base, "--option", "no_such_option=1", "--out", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "no_such_option" in res.output
