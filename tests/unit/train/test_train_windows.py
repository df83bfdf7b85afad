"""BlockRank training on sliding-window families: it trains the layer the reranker reads, and refuses, before
any step, a scoring layer whose window cannot see the first document (issue 21)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from families import build, tokenizer  # noqa: E402

from attnsift.train.blockrank import TrainConfig, train_blockrank  # noqa: E402
from attnsift.train.blockrank_data import TrainExample  # noqa: E402
from attnsift.types import Document, Query  # noqa: E402


def _example() -> TrainExample:
    words = "vitamin citrus scurvy sailors voyage lemon fruit deficiency collagen gums".split()
    docs = tuple(Document(f"d{i}", " ".join(words[(i + j) % len(words)] for j in range(30))) for i in range(4))
    return TrainExample(query=Query("q1", "what prevents scurvy?"), documents=docs, grades=(0, 1, 0, 0),
                        positive=(False, True, False, False))


def _save(name: str, path):
    build(name, seed=0).save_pretrained(path)
    tokenizer().save_pretrained(path)
    return path


def _config(model_dir, **kw) -> TrainConfig:
    base = dict(model=str(model_dir), candidates=4, block_tokens=32, max_words=30, lr=1e-3, steps=1, save_every=1,
                progress=False, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_a_scoring_layer_whose_window_misses_the_first_document_is_refused_before_training(tmp_path):
    # Mistral's tiny model slides a 24-token window on every layer: the scoring rows cannot see document 1.
    model_dir = _save("Mistral", tmp_path / "mistral")
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"sliding-window layer \(window 24\).*1 of 1 training prompts"):
        train_blockrank(_config(model_dir, scoring_layer=1), out, examples=[_example()])
    assert not (out / "loss.jsonl").exists() and not (out / "model").exists()


def test_training_defaults_to_the_full_attention_layer_the_reranker_reads(tmp_path):
    from attnsift.rerank.blockrank import default_scoring_layer

    # Gemma 2's tiny model: sliding, full, sliding, full; the middle layer (2) slides, so layer 1 is read.
    model_dir = _save("Gemma 2", tmp_path / "gemma2")
    res = train_blockrank(_config(model_dir), tmp_path / "run", examples=[_example()])
    config = build("Gemma 2").config
    assert res.scoring_layer == default_scoring_layer(config, config.num_hidden_layers) == 1
    assert (res.model_dir / "config.json").is_file()
