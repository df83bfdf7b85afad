"""Long documents are never cut silently: counts per reranker, one warning per run, the figure's shape."""
from __future__ import annotations

import logging

import pytest

pytest.importorskip("transformers")

from attnsift.rerank.base import DocumentCut, TruncationCount, truncation_message, warn_truncation  # noqa: E402
from attnsift.types import Candidate, Document, Query, Ranking, Run  # noqa: E402
from helpers import tiny_icr, tiny_llama_and_tokenizer  # noqa: E402

LOG = "attnsift.rerank.truncation"


def ranking(qid: str, lengths: list[int]) -> Ranking:
    cands = tuple(Candidate(f"{qid}d{i}", float(len(lengths) - i),
                            Document(f"{qid}d{i}", " ".join(f"w{j}" for j in range(n))))
                  for i, n in enumerate(lengths))
    return Ranking(Query(qid, "which words?"), cands)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG and r.levelno == logging.WARNING]


def test_count_shape_and_message():
    c = TruncationCount()
    c.add([DocumentCut(10, 5), DocumentCut(3, 3), DocumentCut(1950, 5), DocumentCut(4, 4, 9, 6)],
          word_limit=5, token_limit=6)
    d = c.as_dict()
    assert d == {"documents": 4, "cut": 3, "unit": "words", "limit": 5, "longest": 1950,
                 "words": {"cut": 2, "limit": 5, "longest": 1950}, "tokens": {"cut": 1, "limit": 6, "longest": 9}}
    msg = truncation_message("icr", d, "hint")
    assert msg == "icr cut 3 of 4 candidate documents: 2 to 5 words (the longest had 1,950), 1 to 6 tokens (the longest had 9); hint"
    c.reset()
    assert c.as_dict()["documents"] == 0 and truncation_message("icr", c.as_dict(), "h") is None
    c.add([DocumentCut(4, 4, 9, 6)], token_limit=6)
    assert c.as_dict()["unit"] == "tokens" and c.as_dict()["limit"] == 6
    assert truncation_message("x", c.as_dict(), "h") == "x cut 1 of 1 candidate documents to 6 tokens (the longest had 9); h"


def test_icr_counts_words_and_one_warning_per_run(caplog):
    r = tiny_icr(max_words=8)
    run = Run([ranking("q1", [4, 12, 30]), ranking("q2", [20, 3]), ranking("q3", [2])], name="bm25")
    with caplog.at_level(logging.WARNING, logger=LOG):
        r.rerank_batch(run, progress=False)
    t = r.truncation
    assert (t["documents"], t["cut"], t["unit"], t["limit"], t["longest"]) == (6, 3, "words", 8, 30)
    msgs = warnings_of(caplog)
    assert msgs == ["icr cut 3 of 6 candidate documents to 8 words (the longest had 30); " + r.truncation_hint]
    # A second run starts from zero and warns once again.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOG):
        r.rerank_batch(Run([ranking("q4", [9])], name="b"), progress=False)
    assert r.truncation["documents"] == 1 and r.truncation["cut"] == 1 and len(warnings_of(caplog)) == 1


def test_nothing_cut_says_nothing(caplog):
    r = tiny_icr(max_words=50)
    with caplog.at_level(logging.WARNING, logger=LOG):
        r.rerank_batch(Run([ranking("q1", [4, 12])], name="b"), progress=False)
    assert r.truncation["cut"] == 0 and r.truncation["unit"] is None and warnings_of(caplog) == []
    assert warn_truncation(r) is None


def test_outside_a_run_the_first_cut_warns_once(caplog):
    r = tiny_icr(max_words=5)
    with caplog.at_level(logging.WARNING, logger=LOG):
        r.rerank(ranking("q1", [10, 2]))
        r.rerank(ranking("q2", [10, 20]))
    assert len(warnings_of(caplog)) == 1 and "1 of 2" in warnings_of(caplog)[0]
    assert r.truncation["documents"] == 4 and r.truncation["cut"] == 3
    r.reset_truncation()
    assert r.truncation["documents"] == 0


def test_token_cut_counted():
    r = tiny_icr(max_words=None, max_doc_tokens=4)
    r.rerank(ranking("q1", [10, 2]))
    t = r.truncation
    assert t["unit"] == "tokens" and t["cut"] == 1 and t["limit"] == 4 and t["longest"] > 4
    assert t["words"]["cut"] == 0


def test_sliding_windows_count_each_candidate_once():
    r = tiny_icr(max_words=6, window=3, stride=2, max_context_tokens=90)
    rk = ranking("q1", [10, 2, 8, 3, 12])
    d = r.score_details(rk)
    assert d.windows > 1
    r.rerank(rk)
    assert r.truncation["documents"] == 5 and r.truncation["words"]["cut"] == 3


def test_siblings_and_orders_keep_their_own_count():
    r = tiny_icr(max_words=5)
    s = r.with_options(calibration="none")
    r.rerank(ranking("q1", [10, 2]))
    assert r.truncation["documents"] == 2 and s.truncation["documents"] == 0
    two = r.with_options(orders=2)
    two.rerank(ranking("q1", [10, 2]))
    assert two.truncation["documents"] == 2 and two.truncation["cut"] == 1


def test_listwise_default_counts_title_and_text():
    from attnsift.rerank.listwise import ListwiseReranker

    m, t = tiny_llama_and_tokenizer()
    lw = ListwiseReranker(m, tokenizer=t, max_words=3)
    rk = Ranking(Query("q", "x"), (Candidate("a", 2.0, Document("a", "one two", title="t1 t2")),
                                   Candidate("b", 1.0, Document("b", "one"))))
    cuts = lw.document_cuts(rk)
    assert cuts == [DocumentCut(4, 3), DocumentCut(1, 1)]


def test_prompt_builders_report_cuts():
    from attnsift.rerank.blockrank_prompts import build_blockrank_prompt
    from attnsift.rerank.prompts import build_icr_prompt, cut_document

    _, tok = tiny_llama_and_tokenizer()
    docs = [(None, "alpha beta gamma delta epsilon"), ("T", "one two")]
    lay = build_icr_prompt(tok, "q", docs, max_words=3, max_doc_tokens=2)
    assert lay.cuts[0].words == 5 and lay.cuts[0].words_kept == 3 and lay.cuts[0].tokens_kept == 2
    assert lay.cuts[1].words == 2 and not lay.cuts[1].words_kept < 2
    text, cut = cut_document("a b c d", tok, 2, None)
    assert text == "a b" and cut == DocumentCut(4, 2)
    bp = build_blockrank_prompt(tok, "q", [(None, "word " * 60), (None, "short")], block_tokens=30, max_words=50)
    assert bp.cuts[0].words == 60 and bp.cuts[0].words_kept == 50 and bp.cuts[0].tokens_kept < bp.cuts[0].tokens
    assert not bp.cuts[1].cut


def test_blockrank_counts_word_and_token_cuts():
    from helpers import tiny_llama_and_tokenizer, toy_ranking

    from attnsift.rerank.blockrank import BlockRankReranker

    m, t = tiny_llama_and_tokenizer(layers=3, heads=2, seed=1)
    words = BlockRankReranker(m, tokenizer=t, max_words=7, block_tokens=None)
    with words.truncation_run():
        words.rerank(toy_ranking(5), 5)
    assert (words.truncation["cut"], words.truncation["unit"], words.truncation["limit"]) == (3, "words", 7)
    tokens = BlockRankReranker(m, tokenizer=t, max_words=1000, block_tokens=40)  # the ID frame leaves ~20-30 tokens
    with tokens.truncation_run():
        tokens.rerank(toy_ranking(5), 5)
    assert tokens.truncation["tokens"]["cut"] > 0 and tokens.truncation["tokens"]["limit"] == 40
