"""Prompt layout and exact token spans, on two real tokenizers (SmolLM2's with a chat template,
Gemma 3's without one)."""
from __future__ import annotations

import functools

import pytest

pytest.importorskip("transformers")

from attnsift.rerank.prompts import INSTRUCTIONS, build_icr_prompt, truncate_tokens, truncate_words  # noqa: E402

DOCS = [
    (None, "Vitamin C (ascorbic acid) prevents scurvy.\nIt is found in citrus fruit."),
    ("Naïve Bayes", "A [probabilistic] classifier — 数据 {x} ≥ 3; emoji 🚀.\n\n[2] looks like a marker."),
    (None, "Short."),
    (None, "line one\n\nline two\n- bullet [a]\n- bullet (b)"),
]


@functools.lru_cache(maxsize=None)
def _tok(alias: str):
    from attnsift.rerank.llm import load_tokenizer

    try:
        return load_tokenizer(alias)
    except ValueError as exc:  # model package not installed
        pytest.skip(str(exc))


@pytest.fixture(params=["smollm2-135m", "gemma3-270m"])
def tok(request):
    return _tok(request.param)


def test_doc_spans_cover_exactly_each_document(tok):
    lay = build_icr_prompt(tok, "what prevents scurvy?", DOCS)
    assert lay.order == [3, 2, 1, 0]  # reversed: first-stage top-1 nearest the query
    ends = []
    for j, ((s, e), (cs, ce)) in enumerate(zip(lay.doc_spans, lay.doc_char_spans)):
        assert 0 <= s < e <= lay.query_start
        covered = lay.text[lay.offsets[s][0]: lay.offsets[e - 1][1]]
        block = lay.text[cs:ce]
        # The tokens cover the whole block ("[n] title\ntext"), and nothing of the next block.
        assert block.strip() in covered or covered.strip() in block, (covered, block)
        assert block.startswith(f"[{j + 1}] ")
        title, text = DOCS[lay.order[j]]
        assert text in block and (title is None or title in block)
        assert lay.offsets[s][0] <= cs + 1 and lay.offsets[e - 1][1] >= ce - 1
        ends.append((s, e))
    # Spans are disjoint and increasing.
    assert all(e1 <= s2 for (_, e1), (s2, _) in zip(ends, ends[1:]))
    assert tok(lay.text, add_special_tokens=False)["input_ids"] == lay.input_ids


def test_query_span_starts_at_the_instruction(tok):
    lay = build_icr_prompt(tok, "what prevents scurvy?", DOCS, instruction="qa")
    span_text = lay.text[lay.offsets[lay.query_start][0]:]
    assert span_text.lstrip().startswith(INSTRUCTIONS["qa"][:20])
    assert "Query: what prevents scurvy?" in span_text
    assert lay.query_start > lay.doc_spans[-1][0]


def test_chat_template_or_plain_layout(tok):
    lay = build_icr_prompt(tok, "q?", DOCS[:1])
    if tok.chat_template:
        assert lay.text.index("Here are some paragraphs:") > 0  # user turn opened by the template
        assert lay.text.rstrip() != lay.text.rstrip().split("Query: q?")[0]
    else:
        assert lay.text.startswith((tok.bos_token or "") + "Here are some paragraphs:")
        assert lay.text.endswith("Query: q?")


def test_na_prompt_shares_the_token_prefix(tok):
    a = build_icr_prompt(tok, "what prevents scurvy?", DOCS)
    b = build_icr_prompt(tok, "N/A", DOCS)
    assert a.query_start == b.query_start
    assert a.input_ids[: a.query_start] == b.input_ids[: b.query_start]


def test_truncation_by_words_keeps_whitespace_and_by_tokens(tok):
    text = "one two\nthree  four\n\nfive six"
    assert truncate_words(text, 3) == "one two\nthree"
    assert truncate_words(text, 100) == text
    assert truncate_words(text, None) == text
    cut = truncate_tokens("alpha beta gamma delta epsilon zeta eta theta", tok, 3)
    assert 0 < len(tok(cut, add_special_tokens=False)["input_ids"]) <= 3
    lay = build_icr_prompt(tok, "q", [(None, "word " * 500)], max_words=10)
    assert lay.text.count("word") == 10


def test_bad_instruction_and_empty_list(tok):
    with pytest.raises(ValueError, match="instruction"):
        build_icr_prompt(tok, "q", DOCS, instruction="nope")
    with pytest.raises(ValueError, match="at least one"):
        build_icr_prompt(tok, "q", [])
