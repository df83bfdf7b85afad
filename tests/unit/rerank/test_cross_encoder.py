"""The cross-encoder baseline (rerank/cross_encoder.py) with a tiny random BERT cross-encoder built offline:
scores equal an independent transformers forward, name checks before loading, the registry and the CLI."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")

from helpers import write_tiny_cross_encoder  # noqa: E402

from attnsift.rerank.cross_encoder import CrossEncoderReranker, check_cross_encoder_name  # noqa: E402
from attnsift.types import Candidate, Document, Query, Ranking  # noqa: E402


@pytest.fixture(scope="module")
def ce_dir(tmp_path_factory) -> Path:
    return write_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce"))


@pytest.fixture(scope="module")
def reranker(ce_dir) -> CrossEncoderReranker:
    return CrossEncoderReranker(str(ce_dir), device="cpu")


def ranking(n: int = 6, long_words: int = 0) -> Ranking:
    texts = ["Vitamin C deficiency causes scurvy.", "Granite is an igneous rock.", "Lemons contain ascorbic acid.",
             "Stars fuse hydrogen into helium.", "Sailors ate limes on long voyages.", "Milk is a source of calcium."]
    docs = [Document(f"d{i}", texts[i % len(texts)] + " word" * (long_words if i == 0 else 0), title=f"T{i}")
            for i in range(n)]
    return Ranking(Query("q1", "what causes scurvy"), tuple(Candidate(d.id, 10.0 - i, d) for i, d in enumerate(docs)))


def direct_logits(folder: Path, r: Ranking, max_length: int = 128) -> list[list[float]]:
    """The model's logits for each (query, "title text") pair, with transformers alone."""
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.BertForSequenceClassification.from_pretrained(folder).eval()
    q = [r.query.text] * len(r)
    d = [f"{c.document.title} {c.document.text}" for c in r.candidates]
    enc = tok(q, d, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits.tolist()


def test_scores_are_the_models_logits_and_do_not_depend_on_batch_size(reranker, ce_dir):
    r = ranking()
    scores = reranker.score(r)
    expected = [row[0] for row in direct_logits(ce_dir, r)]
    assert scores == pytest.approx(expected, abs=1e-4)
    assert len({round(s, 4) for s in scores}) == len(scores)  # the tiny model tells the documents apart
    assert reranker.with_options(batch_size=1).score(r) == pytest.approx(scores, abs=1e-5)
    out = reranker.rerank_detailed(r, k=4)
    assert out.seconds > 0
    head = sorted(r.candidates[:4], key=lambda c: (-expected[int(c.doc_id[1:])], c.doc_id))
    assert out.ranking.doc_ids[:4] == [c.doc_id for c in head]
    assert out.ranking.doc_ids[4:] == ["d4", "d5"]  # the tail keeps its first-stage order below


def test_two_label_model_scores_the_log_odds_of_relevant(tmp_path):
    folder = write_tiny_cross_encoder(tmp_path / "two", num_labels=2, seed=1)
    r = ranking(4)
    scores = CrossEncoderReranker(str(folder), device="cpu").score(r)
    assert scores == pytest.approx([b - a for a, b in direct_logits(folder, r)], abs=1e-4)


def test_long_documents_are_cut_counted_and_score_like_transformers_truncation(ce_dir):
    rr = CrossEncoderReranker(str(ce_dir), device="cpu", max_length="24")
    r = ranking(3, long_words=60)
    scores = rr.score(r)
    assert scores == pytest.approx([row[0] for row in direct_logits(ce_dir, r, max_length=24)], abs=1e-4)
    if hasattr(rr, "truncation"):  # the shared count of cut documents (rerank/base.py)
        rr.rerank(r)
        fig = rr.truncation
        assert fig["cut"] == 1 and fig["documents"] == 3 and fig["unit"] == "tokens"


def test_config_rejects_bad_options_before_loading(ce_dir):
    with pytest.raises(ValueError, match="batch_size"):
        CrossEncoderReranker(str(ce_dir), batch_size=0)
    with pytest.raises(ValueError, match="unknown option.*accepted: batch_size, max_length, title"):
        CrossEncoderReranker(str(ce_dir), window=3)
    with pytest.raises(ValueError, match="needs a model"):
        CrossEncoderReranker(None)


def test_name_checks_say_what_is_wrong(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="does not exist"):
        check_cross_encoder_name(str(tmp_path / "nope"))
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file"):
        check_cross_encoder_name(str(tmp_path / "file.bin"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        check_cross_encoder_name(str(tmp_path / "empty"))
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    with pytest.raises(ValueError, match="LlamaForCausalLM model, not a sequence-classification model"):
        check_cross_encoder_name(str(lm))
    with pytest.raises(ValueError, match="hf download nobody/no-such-cross-encoder"):
        check_cross_encoder_name("nobody/no-such-cross-encoder")
    with pytest.raises(TypeError):
        check_cross_encoder_name("")


def test_registry_builds_it_and_requires_a_model(ce_dir):
    from attnsift.registry import RERANKERS, build_reranker, check_model, check_options

    assert "cross-encoder" in RERANKERS
    for call in (lambda: build_reranker("cross-encoder"), lambda: check_model("reranker", "cross-encoder", None)):
        with pytest.raises(ValueError, match="needs a model and attnsift ships none.*--model"):
            call()
    with pytest.raises(ValueError, match="does not exist"):
        check_model("reranker", "cross-encoder", str(ce_dir / "missing"))
    check_model("reranker", "cross-encoder", str(ce_dir))
    check_options("reranker", "cross-encoder", {"max_length": "64"})
    rr = build_reranker("cross-encoder", model=str(ce_dir), options={"batch_size": "2"}, device="auto")
    assert rr.config.batch_size == 2 and rr.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cli_rerank_with_a_cross_encoder(ce_dir, tmp_path):
    from typer.testing import CliRunner

    from attnsift.cli.main import app
    from helpers import write_tiny_beir

    data = write_tiny_beir(tmp_path / "tiny")
    runner = CliRunner()
    res = runner.invoke(app, ["rerank", "--dataset", str(data), "--reranker", "cross-encoder", "--model", str(ce_dir),
                              "--depth", "4", "--first-stage-k", "8", "--device", "auto", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["system"].endswith("cross-encoder") and out["num_queries"] == 3
    assert out["timing"]["rerank_seconds_per_query"] > 0
    res = runner.invoke(app, ["rerank", "--dataset", str(data), "--reranker", "cross-encoder"])
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "needs a model" in res.stderr
    # search over a saved index, reranked by the cross-encoder
    assert runner.invoke(app, ["index", "--dataset", str(data), "--out", str(tmp_path / "idx")]).exit_code == 0
    res = runner.invoke(app, ["search", "--index", str(tmp_path / "idx"), "--reranker", "cross-encoder", "--model",
                              str(ce_dir), "--depth", "3", "-k", "3", "--json", "vitamin C and scurvy"])
    assert res.exit_code == 0, res.output
    found = json.loads(res.stdout)
    assert found["reranker"] == "cross-encoder" and len(found["queries"][0]["results"]) == 3


def test_bench_spec_names_the_model(ce_dir):
    from attnsift.bench.specs import SystemSpec
    from attnsift.cli.common import check_spec_options

    spec = SystemSpec.parse(f"bm25+cross-encoder:{ce_dir}[depth=5;batch_size=4]")
    assert spec.reranker.model == str(ce_dir) and spec.depth == 5
    check_spec_options(spec)
    with pytest.raises(ValueError, match="system spec 'bm25\\+cross-encoder'.*needs a model"):
        check_spec_options(SystemSpec.parse("bm25+cross-encoder"))
    with pytest.raises(ValueError, match="does not exist"):
        check_spec_options(SystemSpec.parse(f"bm25+cross-encoder:{os.fspath(ce_dir)}-missing"))
