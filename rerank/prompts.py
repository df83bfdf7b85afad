"""Prompt layouts for the attention rerankers, with exact token spans.

The ICR layout (METHODS.md section 1)::

    {chat prefix}Here are some paragraphs:{sep}[1] {title}\\n{text}{sep}...[N] ...{sep}
    {late instruction}{sep}Query: {query}{chat suffix}

The chat prefix / suffix come from the tokenizer's own chat template (the user turn is rendered around
a placeholder and split there); a tokenizer without a template (e.g. Gemma 3 270M base) gets the plain
layout with the tokenizer's BOS token. Spans are computed from the character offsets of the fast
tokenizer over the whole prompt string, tokenized once, so they are exact for any tokenizer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from attnsift.rerank.base import DocumentCut

SEP = "\n\n"
INSTRUCTIONS = {
    "ie": "Please find information that are relevant to the following query in the paragraphs above.",
    "qa": "Please answer the following question based on the information in the paragraphs above.",
}
_PLACEHOLDER = "\u2063ATTNSIFT_CONTENT\u2063"
_WORD = re.compile(r"\S+")


def truncate_words(text: str, max_words: int | None) -> str:
    """Keep the first ``max_words`` whitespace-separated words, preserving the original whitespace
    (newlines included) between them."""
    if max_words is None:
        return text
    end = None
    for i, m in enumerate(_WORD.finditer(text)):
        if i + 1 == max_words:
            end = m.end()
            break
    return text if end is None else text[:end]


def truncate_tokens(text: str, tokenizer: Any, max_tokens: int | None) -> str:
    """Cut ``text`` after its first ``max_tokens`` tokens (by the tokenizer's character offsets)."""
    if max_tokens is None:
        return text
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text
    return text[: offsets[max_tokens - 1][1]]


def cut_document(text: str, tokenizer: Any, max_words: int | None,
                 max_tokens: int | None) -> tuple[str, DocumentCut]:
    """``text`` cut to ``max_words`` words, then to ``max_tokens`` tokens, and what the cut took.

    Returns
    -------
    (kept_text, cut)
        ``cut`` (:class:`~attnsift.rerank.base.DocumentCut`) counts words of ``text`` and tokens of the
        word-cut text (tokens only when ``max_tokens`` is given).
    """
    words = len(_WORD.findall(text))
    kept = truncate_words(text, max_words)
    if max_tokens is None:
        return kept, DocumentCut(words, min(words, max_words or words))
    enc = tokenizer(kept, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    n = len(offsets)
    out = kept if n <= max_tokens else kept[: offsets[max_tokens - 1][1]]
    return out, DocumentCut(words, min(words, max_words or words), n, min(n, max_tokens))


def split_passages(text: str, passage_words: int, stride: int) -> list[str]:
    """``text`` as overlapping windows of ``passage_words`` whitespace words every ``stride`` words.

    A text of at most ``passage_words`` words is one passage (itself). The last window ends at the
    text's last word, so every word is in some passage; the original whitespace is kept.
    """
    if passage_words < 1 or stride < 1:
        raise ValueError(f"passage_words and stride must be >= 1, got {passage_words} and {stride}")
    spans = [m.span() for m in _WORD.finditer(text)]
    n = len(spans)
    if n <= passage_words:
        return [text]
    starts = list(range(0, n - passage_words + 1, stride))
    if starts[-1] + passage_words < n:
        starts.append(n - passage_words)
    return [text[spans[s][0]:spans[s + passage_words - 1][1]] for s in starts]


def chat_wrap(tokenizer: Any, content: str) -> tuple[str, str, bool]:
    """Split the chat template around a user message.

    Returns
    -------
    (prefix, suffix, templated)
        ``prefix + content + suffix`` is the rendered user turn followed by the assistant header.
        Without a chat template, the prefix is the BOS token text (if any) and the suffix is empty.
    """
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": _PLACEHOLDER}], tokenize=False, add_generation_prompt=True
        )
        if rendered.count(_PLACEHOLDER) == 1:
            prefix, suffix = rendered.split(_PLACEHOLDER)
            return prefix, suffix, True
    bos = getattr(tokenizer, "bos_token", None) or ""
    return bos, "", False


@dataclass(frozen=True)
class PromptLayout:
    """A tokenized prompt and where everything is in it.

    Attributes
    ----------
    text : str
        The whole prompt.
    input_ids : list[int]
        Its tokens (tokenized once, without extra special tokens: the template's are in the text).
    doc_spans : list[tuple[int, int]]
        Token ranges ``[start, end)`` of each document, in the order of ``order`` (prompt order).
    order : list[int]
        ``order[j]`` = index (in the caller's candidate list) of the j-th document in the prompt.
    query_start : int
        First token of the query span (the late instruction); the span runs to the end of the prompt.
    doc_char_spans : list[tuple[int, int]]
        Character ranges of each document in ``text`` (prompt order).
    cuts : tuple[DocumentCut, ...]
        What the word and token cuts took from each document (caller's order).
    """

    text: str
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    doc_spans: list[tuple[int, int]]
    doc_char_spans: list[tuple[int, int]]
    order: list[int]
    query_start: int
    cuts: tuple = ()

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    def span_of(self, candidate_index: int) -> tuple[int, int]:
        """Token span of the caller's ``candidate_index``-th document."""
        return self.doc_spans[self.order.index(candidate_index)]


def format_document(text: str, title: str | None) -> str:
    return f"{title}\n{text}" if title else text


def build_icr_prompt(
    tokenizer: Any,
    query: str,
    documents: Sequence[tuple[str | None, str]],
    instruction: str = "ie",
    max_words: int | None = 300,
    max_doc_tokens: int | None = None,
    reverse: bool = True,
) -> PromptLayout:
    """Build the ICR prompt for ``query`` over ``documents`` (``(title, text)`` in first-stage order).

    Documents are truncated (words, then tokens), numbered [1]..[N] in prompt order, and placed in
    reverse first-stage order when ``reverse`` (the first-stage top-1 nearest the query).
    """
    if instruction not in INSTRUCTIONS:
        raise ValueError(f"instruction must be one of {sorted(INSTRUCTIONS)}, got {instruction!r}")
    if not documents:
        raise ValueError("build_icr_prompt needs at least one document")
    order = list(range(len(documents)))
    if reverse:
        order.reverse()
    prefix, suffix, _ = chat_wrap(tokenizer, "")
    parts: list[str] = [prefix, "Here are some paragraphs:", SEP]
    pos = sum(len(p) for p in parts)
    char_spans: list[tuple[int, int]] = []
    cuts: list[Any] = [None] * len(documents)
    for n, idx in enumerate(order, start=1):
        title, text = documents[idx]
        text, cuts[idx] = cut_document(text, tokenizer, max_words, max_doc_tokens)
        if title:
            title = truncate_words(title, max_words)
        block = f"[{n}] {format_document(text, title)}"
        parts += [block, SEP]
        char_spans.append((pos, pos + len(block)))
        pos += len(block) + len(SEP)
    query_char = pos
    parts += [INSTRUCTIONS[instruction], SEP, f"Query: {query}", suffix]
    text = "".join(parts)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    doc_spans = [_token_span(offsets, s, e) for s, e in char_spans]
    query_start = next((i for i, (s, e) in enumerate(offsets) if e > query_char and e > s), len(ids))
    # A token straddling the separator and the instruction belongs to the query span.
    for j, (s, e) in enumerate(doc_spans):
        if e > query_start:
            doc_spans[j] = (s, query_start)
    return PromptLayout(text, ids, offsets, doc_spans, char_spans, order, query_start, tuple(cuts))


def _token_span(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """Tokens whose characters overlap ``[start, end)`` (empty-width tokens are skipped)."""
    first = last = None
    for i, (s, e) in enumerate(offsets):
        if e <= s:
            continue
        if s < end and e > start:
            if first is None:
                first = i
            last = i
        elif s >= end:
            break
    if first is None:
        raise ValueError(f"no token covers characters [{start}, {end}) of the prompt; is the document empty?")
    return first, last + 1


def build_listwise_prompt(tokenizer: Any, query: str, documents: Sequence[tuple[str | None, str]], max_words: int | None = 100) -> str:
    """RankGPT-style permutation prompt (numbered passages, asks for ``[2] > [1] > ...``)."""
    n = len(documents)
    lines = [
        f"I will provide you with {n} passages, each indicated by a numerical identifier []. "
        f"Rank the passages based on their relevance to the search query: {query}.",
        "",
    ]
    for i, (title, text) in enumerate(documents, start=1):
        body = truncate_words(format_document(text, title), max_words)
        lines.append(f"[{i}] {' '.join(body.split())}")
    lines += [
        "",
        f"Search Query: {query}.",
        f"Rank the {n} passages above based on their relevance to the search query. All the passages should "
        "be included and listed using identifiers, in descending order of relevance. The output format should "
        "be [] > [], e.g., [2] > [1]. Only respond with the ranking results, do not say any word or explain.",
    ]
    prefix, suffix, _ = chat_wrap(tokenizer, "")
    return prefix + "\n".join(lines) + suffix
