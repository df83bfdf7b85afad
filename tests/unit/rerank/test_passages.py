"""ICR passage scoring (passages=max): splitting, options, and the max over passages, exactly."""
from __future__ import annotations

import math

import pytest

pytest.importorskip("transformers")

from attnsift.rerank.icr_config import ICRConfig  # noqa: E402
from attnsift.rerank.prompts import split_passages  # noqa: E402
from attnsift.types import Candidate, Document, Query, Ranking  # noqa: E402
from helpers import tiny_icr  # noqa: E402


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{j}" for j in range(n))


def long_ranking() -> Ranking:
    texts = [words(23, "a"), words(5, "b"), words(11, "c"), words(8, "d")]
    return Ranking(Query("q", "which passage?"),
                   tuple(Candidate(f"d{i}", float(4 - i), Document(f"d{i}", t, title="T" if i == 2 else None))
                         for i, t in enumerate(texts)))


def test_split_covers_every_word_with_overlap():
    text = words(23)
    parts = split_passages(text, 8, 5)
    assert [p.split()[0] for p in parts] == ["w0", "w5", "w10", "w15"]
    assert parts[-1].split()[-1] == "w22" and all(len(p.split()) == 8 for p in parts)
    assert set(" ".join(parts).split()) == set(text.split())
    assert split_passages("a  b\nc", 3, 1) == ["a  b\nc"]          # short text: itself, whitespace kept
    assert split_passages("a b\n\nc d", 2, 2) == ["a b", "c d"]
    assert split_passages(words(10), 4, 4)[-1] == "w6 w7 w8 w9"    # the last window ends at the last word
    with pytest.raises(ValueError, match="passage_words"):
        split_passages("a", 0, 1)


def test_options_checked():
    assert ICRConfig(passages="max", passage_words=50, passage_stride=25).passage_words == 50
    assert ICRConfig(passages="max", max_words=None).max_words is None
    with pytest.raises(ValueError, match="passages must be one of none, max"):
        ICRConfig(passages="min")
    with pytest.raises(ValueError, match="only used with passages=max"):
        ICRConfig(passage_words=50)
    with pytest.raises(ValueError, match="max_words=100 is not used with passages=max"):
        ICRConfig(passages="max", max_words=100)
    with pytest.raises(ValueError, match="passage_stride <= passage_words"):
        ICRConfig(passages="max", passage_words=10, passage_stride=11)
    with pytest.raises(ValueError, match="passage_words must be an integer >= 1"):
        ICRConfig(passages="max", passage_words=0)


def manual_max(calibration: str, passage_words: int, stride: int, rk: Ranking) -> list[float]:
    """The passages scored as plain candidates by a passages=none reranker, the max taken by hand."""
    cands, owner = [], []
    for c in rk.candidates:
        for k, p in enumerate(split_passages(c.document.text, passage_words, stride)):
            pid = f"{c.doc_id}#p{k:05d}"
            cands.append(Candidate(pid, c.score, Document(pid, p, c.document.title)))
            owner.append(c.doc_id)
    plain = tiny_icr(max_words=None, calibration=calibration)
    expanded = Ranking(rk.query, tuple(cands))
    s = plain.score(expanded)
    by_id = {c.doc_id: x for c, x in zip(expanded.candidates, s)}
    return [max(v for pid, v in by_id.items() if pid.split("#")[0] == c.doc_id) for c in rk.candidates]


@pytest.mark.parametrize("calibration", ["none", "masked_na"])
def test_score_is_the_max_over_passages(calibration):
    rk = long_ranking()
    r = tiny_icr(passages="max", passage_words=6, passage_stride=4, calibration=calibration)
    d = r.score_details(rk)
    want = manual_max(calibration, 6, 4, rk)
    assert d.scores == pytest.approx(want, rel=1e-5, abs=1e-8)
    assert [n for n, _ in d.passages] == [6, 1, 3, 2]  # 23 words: starts 0, 4, 8, 12, 16, 17
    assert all(0 <= best < n for n, best in d.passages)
    # The per-document masses are the best passage's, and its tokens are that passage's.
    if calibration == "none":
        assert d.raw == pytest.approx(want, rel=1e-5)
    assert d.head_raw.shape[-1] == 4 and len(d.tokens) == 4
    # Nothing was cut by words: the whole document was read.
    r.rerank(rk)
    assert r.truncation["cut"] == 0 and r.truncation["documents"] == 4


def test_fusion_is_per_document():
    import numpy as np

    from attnsift.rerank.head_scoring import fuse

    rk = long_ranking()
    r = tiny_icr(passages="max", passage_words=6, passage_stride=4, calibration="none", fusion="interp",
                 fusion_weight=0.7)
    att = manual_max("none", 6, 4, rk)
    want = fuse(np.array(att), np.array([c.score for c in rk.candidates]), 0.7, "interp")
    assert r.score(rk) == pytest.approx(list(want), rel=1e-5)


def test_passages_in_sliding_windows_and_two_orders():
    rk = long_ranking()
    r = tiny_icr(passages="max", passage_words=6, passage_stride=4, window=4, stride=2, max_context_tokens=100)
    d = r.score_details(rk)
    assert d.windows > 1 and len(d.scores) == 4 and all(math.isfinite(x) for x in d.scores)
    two = tiny_icr(passages="max", passage_words=6, passage_stride=4, orders=2)
    assert len(two.score(rk)) == 4
    with pytest.raises(ValueError, match="use score_details"):
        two.masses(rk)


def test_short_documents_score_as_without_passages():
    rk = Ranking(Query("q", "x"), tuple(Candidate(f"d{i}", float(-i), Document(f"d{i}", words(4, f"t{i}")))
                                        for i in range(3)))
    a = tiny_icr(passages="max", passage_words=6, passage_stride=3).score(rk)
    b = tiny_icr(max_words=None).score(rk)
    assert a == pytest.approx(b, rel=1e-6)


@pytest.mark.slow
def test_relevant_sentence_beyond_the_cut_moves_up_with_passages():
    """SmolLM2-135M: the only document that answers the query says so after 120 words of filler."""
    from attnsift.rerank.icr import ICRReranker

    filler = ("The committee met on Tuesday to review the annual budget and the schedule of the regional office. "
              "Members discussed parking, the cafeteria menu, printer maintenance and the holiday calendar. ") * 4
    docs = [("a", "Sailing ships crossed the Atlantic Ocean carrying cargo and passengers between ports."),
            ("b", filler + "Scurvy is caused by a lack of vitamin C, and sailors prevented it by eating lemons."),
            ("c", "Granite is an igneous rock formed from slowly cooling magma deep below the surface."),
            ("d", "Adults need about seven hours of sleep each night to stay healthy and alert.")]
    rk = Ranking(Query("q", "What causes scurvy and how did sailors prevent it?"),
                 tuple(Candidate(d, float(4 - i), Document(d, t)) for i, (d, t) in enumerate(docs)))
    cut = ICRReranker("smollm2-135m", max_words=40)
    whole = cut.with_options(max_words=None, passages="max", passage_words=40, passage_stride=20)
    rank_cut = [c.doc_id for c in cut.rerank(rk).candidates].index("b")
    rank_passages = [c.doc_id for c in whole.rerank(rk).candidates].index("b")
    assert rank_passages == 0 and rank_passages < rank_cut
    assert cut.truncation["cut"] == 1 and cut.truncation["longest"] > 100 and whole.truncation["cut"] == 0
