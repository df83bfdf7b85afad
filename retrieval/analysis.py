"""Lucene-like text analysis for BM25: tokenize, drop possessives, lowercase, stop, stem.

The chain mirrors Lucene's ``EnglishAnalyzer`` (which Anserini/pyserini use for BEIR "flat" indexes),
so that BM25 scores computed here rank like pyserini's:

1. ``StandardTokenizer`` (Unicode UAX#29 word boundaries), approximated by a regular expression:
   runs of letters/digits/underscore; letters joined across ``' ’ . :`` (``don't``, ``u.s.a``);
   digits joined across ``. , ; ' ’`` (``3.5``, ``1,000``). One-character tokens and numbers are kept
   (the bm25s default pattern drops one-character tokens, which loses e.g. ``p`` in "p 53" or ``2``).
2. ``EnglishPossessiveFilter``: a trailing ``'s`` / ``’s`` is removed.
3. ``LowerCaseFilter``.
4. ``StopFilter`` with Lucene's 33-word English stop set (``stopwords="en"``).
5. ``PorterStemFilter`` = PyStemmer's ``"porter"`` algorithm (the original Porter stemmer, not
   Snowball's "english"/Porter2).

On the BEIR SciFact and NFCorpus corpora this chain gives the same terms as pyserini's Lucene analyzer
for all but a handful of documents. Known differences (rare in English text, documented rather than
emulated): Extended_Pictographic is approximated by a subset, Thai/Lao/Khmer are not dictionary
segmented, a combining mark before a joining character ends the token, and tokens longer than 255
characters are not cut.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, Sequence

#: Lucene's ``EnglishAnalyzer.ENGLISH_STOP_WORDS_SET`` (33 words).
LUCENE_ENGLISH_STOPWORDS: frozenset[str] = frozenset(
    """a an and are as at be but by for if in into is it no not of on or such that the their then
    there these they this to was will with""".split()
)

STOPWORD_SETS: dict[str, frozenset[str]] = {"en": LUCENE_ENGLISH_STOPWORDS, "lucene": LUCENE_ENGLISH_STOPWORDS}

# Approximation of Lucene's StandardTokenizer (UAX#29 word boundaries) as one regular expression.
# Word characters: Python's \w minus "other numbers" (superscripts, circled digits, fractions: UAX#29
# does not treat them as word characters, "m²" -> "m"), minus CJK ideographs and Hiragana (one token
# per character in Lucene).
_NOT_WORD = (
    "\u00b2\u00b3\u00b9\u00bc-\u00be\u2070-\u209f\u2150-\u218f\u2460-\u24ff\u2776-\u2793"
    "\u3040-\u309f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
)
_W = f"[^\\W{_NOT_WORD}]"
# Extend / Format / ZWJ characters attach to the preceding character (WB4): combining marks, soft hyphen.
_X = "[\u00ad\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u200c\u200d\u2060\ufe00-\ufe0f\ufe20-\ufe2f\ufeff]"
_WORD = f"{_W}(?:{_W}|{_X})*"
# WB6/7 (letter MidLetter/MidNumLet letter) and WB11/12 (digit MidNum/MidNumLet digit).
_JOIN = "(?:(?<=[^\\W\\d_])['\u2019.:\u00b7](?=[^\\W\\d_])|(?<=\\d)[.,;'\u2019](?=\\d))"
# Lucene emits each Extended_Pictographic character (emoji, (c), (R), TM, some arrows and dingbats)
# as a token of its own, with its modifiers; this is a compact subset of that Unicode property.
_PICT = (
    "[\u00a9\u00ae\u203c\u2049\u2122\u2139\u2194-\u2199\u21a9\u21aa\u231a\u231b\u2328\u23cf"
    "\u23e9-\u23f3\u23f8-\u23fa\u24c2\u25aa\u25ab\u25b6\u25c0\u25fb-\u25fe\u2600-\u2605"
    "\u2607-\u2712\u2714\u2716\u271d\u2721\u2728\u2733\u2734\u2744\u2747\u274c\u274e"
    "\u2753-\u2755\u2757\u2763-\u2767\u2795-\u2797\u27a1\u27b0\u27bf\u2934\u2935"
    "\u2b05-\u2b07\u2b1b\u2b1c\u2b50\u2b55\u3030\u303d\u3297\u3299\U0001f000-\U0001fffd]"
)
_EMOJI = f"{_PICT}(?:[\ufe0f\U0001f3fb-\U0001f3ff]|\u200d{_PICT})*"
_IDEO = "[\u3040-\u309f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]"
_TOKEN_RE = re.compile(f"{_WORD}(?:{_JOIN}{_WORD})*|{_EMOJI}|{_IDEO}")
_POSSESSIVE_RE = re.compile(r"['\u2019\uff07][sS]$")

_VOWELS = frozenset("aeiou")


def _porter_m(stem: str) -> int:
    """Porter's measure m: the number of vowel-consonant sequences in ``stem``."""
    m, prev_vowel = 0, False
    for i, ch in enumerate(stem):
        # 'y' is a vowel when it follows a consonant (Porter's cons()).
        vowel = ch in _VOWELS or (ch == "y" and i > 0 and not prev_vowel)
        if prev_vowel and not vowel:
            m += 1
        prev_vowel = vowel
    return m


def _lucene_porter_fix(stem: str, restem: Callable[[str], str]) -> str:
    """Apply the two step-2 departures of Lucene's PorterStemmer (from Porter's C reference).

    Lucene maps "-logi" -> "-log" and "-bli" -> "-ble" (the published algorithm maps only "-abli");
    PyStemmer's "porter" follows the published algorithm, so its output still ends in "logi"/"bli".
    After "-bli" -> "-ble", steps 3-5 still apply; re-stemming the word runs exactly those (steps 1-2
    cannot match a word ending in "ble").
    """
    if stem.endswith("logi") and _porter_m(stem[:-4]) > 0:
        return stem[:-1]
    if stem.endswith("bli") and _porter_m(stem[:-3]) > 0:
        return restem(stem[:-3] + "ble")
    return stem


#: Bumped whenever the analysis output changes, so saved indexes built with older rules are rejected.
ANALYZER_VERSION = 1


def _stemmer_algorithms() -> list[str]:
    import Stemmer

    return list(Stemmer.algorithms())


class Analyzer:
    """Turn text into index terms (Lucene ``EnglishAnalyzer``-like by default).

    Parameters
    ----------
    stemmer : str or None
        A PyStemmer algorithm name (``"porter"`` = Lucene's PorterStemFilter, ``"english"`` = Porter2)
        or None for no stemming.
    stopwords : str or None
        ``"en"`` (Lucene's 33-word English set) or None to keep every token.

    Examples
    --------
    >>> Analyzer()("The cell's p53 levels were 3.5x higher")
    ['cell', 'p53', 'level', 'were', '3.5x', 'higher']
    """

    def __init__(self, stemmer: str | None = "porter", stopwords: str | None = "en") -> None:
        if stopwords is not None and not isinstance(stopwords, str):
            raise TypeError(
                f"stopwords must be a name ('en') or None, got {type(stopwords).__name__}: {stopwords!r}"
            )
        if stopwords is not None and stopwords not in STOPWORD_SETS:
            raise ValueError(
                f"unknown stopwords {stopwords!r}; expected one of {sorted(STOPWORD_SETS)} or None (no stopwords)"
            )
        if stemmer is not None and not isinstance(stemmer, str):
            raise TypeError(f"stemmer must be a PyStemmer algorithm name or None, got {stemmer!r}")
        self.stemmer_name = stemmer
        self.stopwords_name = stopwords
        self._stop = STOPWORD_SETS[stopwords] if stopwords is not None else frozenset()
        self._stem = None
        if stemmer is not None:
            import Stemmer

            if stemmer not in Stemmer.algorithms():
                raise ValueError(
                    f"unknown stemmer {stemmer!r}; expected a PyStemmer algorithm such as 'porter' "
                    f"(Lucene's PorterStemFilter) or 'english', or None; available: {sorted(_stemmer_algorithms())}"
                )
            self._stemmer = Stemmer.Stemmer(stemmer)
            self._stem = self._stemmer.stemWords
        # token -> index term; corpora repeat words, so each distinct word is stemmed once.
        self._cache: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Analyzer(stemmer={self.stemmer_name!r}, stopwords={self.stopwords_name!r})"

    def tokenize(self, text: str) -> list[str]:
        """Tokens before stopping and stemming: split, possessive removal, lowercase."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if text.isascii():
            # ASCII: lowercasing first changes neither the token boundaries (the pattern's classes do
            # not depend on case) nor the possessive rule (it accepts 's and 'S), and is ~2x faster
            toks = _TOKEN_RE.findall(text.lower())
            if "_" in text:
                toks = [t for t in toks if t[0] != "_" or t.strip("_")]
            if "'" in text:
                toks = [_POSSESSIVE_RE.sub("", t) if len(t) > 2 and t[-2] == "'" else t for t in toks]
            return toks
        out = []
        for tok in _TOKEN_RE.findall(text):
            if tok[0] == "_" and not tok.strip("_"):
                continue  # a lone underscore (ExtendNumLet) is no word for Lucene
            # Possessive removal runs before lowercasing in Lucene; the pattern accepts both cases.
            if len(tok) > 2 and tok[-2] in "'\u2019\uff07":
                tok = _POSSESSIVE_RE.sub("", tok)
            out.append(tok.lower())
        return out

    def __call__(self, text: str) -> list[str]:
        """Index terms of ``text`` in order (may be empty)."""
        toks = self.tokenize(text)
        if self._stop:
            toks = [t for t in toks if t not in self._stop]
        if self._stem is not None and toks:
            cache = self._cache
            try:
                return [cache[t] for t in toks]  # the common case: every word seen before
            except KeyError:
                self._stem_into_cache([t for t in set(toks) if t not in cache])
            toks = [cache[t] for t in toks]
        return toks

    def _stem_into_cache(self, words: list[str]) -> None:
        if len(self._cache) > 2_000_000:  # bound memory on huge vocabularies
            self._cache.clear()
        stems = self._stem(words)
        lucene_porter = self.stemmer_name == "porter"
        for w, s in zip(words, stems):
            if len(w) <= 2:
                # Lucene's PorterStemmer (like Porter's C reference) leaves 1-2 character words alone;
                # PyStemmer would turn "ms" into "m" and "s" into "".
                s = w
            elif lucene_porter:
                s = _lucene_porter_fix(s, self._stemmer.stemWord)
            self._cache[w] = s

    def analyze_many(self, texts: Iterable[str]) -> list[list[str]]:
        """Index terms of each text, shape ``[len(texts)][n_terms_i]``."""
        return [self(t) for t in texts]

    def config(self) -> dict[str, object]:
        """What a saved index records so that a load can check it analyzes queries the same way."""
        return {"stemmer": self.stemmer_name, "stopwords": self.stopwords_name, "analyzer_version": ANALYZER_VERSION}


def simple_tokens(texts: Sequence[str], analyzer: Analyzer | None = None) -> list[list[str]]:
    """Analyze many texts with ``analyzer`` (default: Lucene-like English)."""
    analyzer = analyzer or Analyzer()
    return analyzer.analyze_many(texts)
