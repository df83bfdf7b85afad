"""Lucene-like analysis: tokenizer, possessives, stopwords, Porter stemming with Lucene's departures."""
from __future__ import annotations

import pytest

from attnsift.retrieval.analysis import LUCENE_ENGLISH_STOPWORDS, Analyzer, _porter_m


def test_lucene_stop_set_is_the_33_word_english_set():
    assert len(LUCENE_ENGLISH_STOPWORDS) == 33
    assert {"the", "a", "with", "their"} <= LUCENE_ENGLISH_STOPWORDS
    assert "were" not in LUCENE_ENGLISH_STOPWORDS  # Lucene's set is small; NLTK's would drop it


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The cell's p53 levels were 3.5x higher", ["cell", "p53", "level", "were", "3.5x", "higher"]),
        # one-character tokens and numbers are kept (bm25s's default pattern drops them)
        ("vitamin D and 2 b", ["vitamin", "d", "2", "b"]),
        ("U.S.A. don't 1,000 e.g. IL-6 T_cell", ["u.s.a", "don't", "1,000", "e.g", "il", "6", "t_cell"]),
        ("ratio 1:2 foo:bar", ["ratio", "1", "2", "foo:bar"]),
        ("CHILDREN\u2019S", ["children"]),
        # Lucene's PorterStemmer: words of <= 2 chars are not stemmed ("ms" would become "m")
        ("ms us s", ["ms", "us", "s"]),
        # step-2 departures of Lucene's PorterStemmer: -logi -> -log, -bli -> -ble (then steps 3-5)
        ("technology assembly possibly irreversibly logy", ["technolog", "assembl", "possibl", "irrevers", "logi"]),
        # superscripts are not word characters; CJK ideographs are one token each; emoji are tokens
        ("m\u00b2 \u4e2d\u6587 \u00a9 \u2192", ["m", "\u4e2d", "\u6587", "\u00a9"]),
        ("___ a_b", ["a_b"]),
        ("the of and", []),
    ],
)
def test_english_analyzer_matches_lucene_chain(text, expected):
    assert Analyzer()(text) == expected


def test_no_stemming_no_stopwords_keeps_lowercased_tokens():
    assert Analyzer(stemmer=None, stopwords=None)("The Running Dogs") == ["the", "running", "dogs"]


def test_porter2_is_available_and_differs():
    assert Analyzer(stemmer="english")("generously") != Analyzer(stemmer="porter")("generously")


def test_porter_measure():
    # examples from Porter (1980): m=0 tr, ee; m=1 trouble, oats; m=2 troubles, private
    assert [_porter_m(w) for w in ("tr", "ee", "troubl", "oat", "troubles", "privat")] == [0, 0, 1, 1, 2, 2]


def test_analysis_is_cached_and_stable():
    a = Analyzer()
    first = a("assembly technologies assembly")
    assert a("assembly technologies assembly") == first == ["assembl", "technolog", "assembl"]


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"stemmer": "nope"}, ValueError),
        ({"stopwords": "klingon"}, ValueError),
        ({"stopwords": ["a"]}, TypeError),
        ({"stemmer": 3}, TypeError),
    ],
)
def test_bad_analyzer_params(kwargs, exc):
    with pytest.raises(exc):
        Analyzer(**kwargs)


def test_non_str_text_rejected():
    with pytest.raises(TypeError):
        Analyzer()(b"bytes")
