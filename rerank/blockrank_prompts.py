"""BlockRank prompts as blocks of tokens, with their block offsets and position ids (METHODS.md section 2).

Layout (each block tokenized on its own, then concatenated)::

    block 0      {chat prefix}{instruction}\\nQuery: {query}\\n\\nDocuments:
    block 1..N   \\nID: {i} | CONTENT: {title} {text} | END ID: {i}        (at most H tokens each)
    last block   \\n\\n{closing instruction}\\nQuery: {query}{chat suffix}Final Answer: [

The chat prefix / suffix are the user-turn opening and the closing + assistant header of the model's
own chat template (:func:`attnsift.rerank.prompts.chat_wrap`, the same split ICR uses).

Why blocks are tokenized separately: a document block must not depend on its neighbours (its
attention sees only block 0 and itself), and a BPE merge across a block boundary would make it so.

No padding. The paper pads every document block to a common length H; with pad keys masked out,
pad tokens change no other token's attention, and their own outputs are never read, so padding changes
no score. We truncate each block to at most H tokens and keep the blocks at their real lengths (the
block-sparse kernels take variable lengths), which is exactly equivalent and cheaper.

Positions: block 0 gets 0..|b0|-1; every document block restarts at |b0| (so the documents share one
position range and their order cannot matter); the last block starts at a fixed large offset, clamped
so that it ends inside the model's ``max_position_embeddings``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from attnsift.rerank.base import DocumentCut
from attnsift.rerank.prompts import chat_wrap, truncate_words

INSTRUCTION = (
    "You are given a query and a list of documents, each written as ID: <id> | CONTENT: <content> | "
    "END ID: <id>. Read every document carefully; your task is to find the documents that help answer "
    "the query."
)
CLOSING = "Which documents above help answer the query? Give their IDs, the most relevant first."
ANSWER_PREFIX = "Final Answer: ["


@dataclass(frozen=True)
class BlockPrompt:
    """A tokenized BlockRank prompt.

    Attributes
    ----------
    input_ids : list[int]
        [T] all tokens, blocks concatenated in prompt order.
    position_ids : list[int]
        [T] position of each token (document blocks restart after block 0; last block at ``final_start``).
    block_offsets : list[int]
        [B+1] token offsets of the blocks; B = number of documents + 2.
    order : list[int]
        ``order[j]`` = index (in the caller's document list) of the j-th document block.
    labels : list[int]
        The ID written in each document, in the caller's order.
    final_start : int
        First position id of the last block (after clamping).
    cuts : tuple[DocumentCut, ...]
        What ``max_words`` and ``block_tokens`` took from each document's content (caller's order;
        tokens counted on the word-cut content, without the ID frame).
    """

    input_ids: list[int]
    position_ids: list[int]
    block_offsets: list[int]
    order: list[int]
    labels: list[int]
    final_start: int
    cuts: tuple = ()

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def num_documents(self) -> int:
        return len(self.block_offsets) - 3


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def document_content(title: str | None, text: str, max_words: int | None) -> str:
    """``{title} {text}`` with whitespace runs collapsed, cut to ``max_words`` words."""
    content = f"{title} {text}" if title else text
    return " ".join(truncate_words(content, max_words).split())


def build_blockrank_prompt(
    tokenizer: Any,
    query: str,
    documents: Sequence[tuple[str | None, str]],
    block_tokens: int | None = 384,
    max_words: int | None = 300,
    final_offset: int = 16384,
    max_positions: int | None = None,
    labels: Sequence[int] | None = None,
    order: Sequence[int] | None = None,
) -> BlockPrompt:
    """Build the BlockRank prompt of ``query`` over ``documents``.

    Parameters
    ----------
    tokenizer : a fast tokenizer (its chat template, when it has one, frames the prompt)
    query : str
    documents : sequence of (title or None, text)
    block_tokens : int or None
        H: each document block is cut to at most H tokens (its content is cut, the ``ID:`` / ``END ID:``
        frame is kept). None: no cut (the longest block sets the size).
    max_words : int or None
        Content cut to this many whitespace words first (as the paper and ICR do).
    final_offset : int
        Desired first position of the last block [16384 in the reference code].
    max_positions : int or None
        The model's ``max_position_embeddings``; the last block is moved down so that it ends inside
        it. None: no clamp.
    labels : sequence of int, optional
        The ID written in each document (caller's order); default 0..N-1.
    order : sequence of int, optional
        Placement of the documents in the prompt (a permutation of 0..N-1); default the given order.

    Raises
    ------
    ValueError
        No documents; bad labels/order; H too small for the frame; a context too short to place the
        last block after the documents.
    """
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"BlockRank needs a non-empty query text, got {query!r}")
    n = len(documents)
    if n == 0:
        raise ValueError("build_blockrank_prompt needs at least one document")
    labels = list(range(n)) if labels is None else [int(x) for x in labels]
    if len(labels) != n or len(set(labels)) != n:
        raise ValueError(f"labels must be {n} distinct integers (one per document), got {labels}")
    order = list(range(n)) if order is None else [int(x) for x in order]
    if sorted(order) != list(range(n)):
        raise ValueError(f"order must be a permutation of 0..{n - 1}, got {order}")
    if block_tokens is not None and block_tokens < 1:
        raise ValueError(f"block_tokens must be a positive number of tokens or None, got {block_tokens}")

    prefix, suffix, templated = chat_wrap(tokenizer, "")
    head0 = _ids(tokenizer, f"{prefix}{INSTRUCTION}\nQuery: {query.strip()}\n\nDocuments:")
    last = _ids(tokenizer, f"\n\n{CLOSING}\nQuery: {query.strip()}{suffix if templated else chr(10)}{ANSWER_PREFIX}")

    blocks: list[list[int]] = []
    cuts: list = [None] * n
    for j in order:
        title, text = documents[j]
        i = labels[j]
        head = _ids(tokenizer, f"\nID: {i} | CONTENT: ")
        tail = _ids(tokenizer, f" | END ID: {i}")
        body = _ids(tokenizer, document_content(title, text, max_words))
        words = len((f"{title} {text}" if title else text).split())
        had = len(body)
        if block_tokens is not None:
            budget = block_tokens - len(head) - len(tail)
            if budget < 1:
                raise ValueError(
                    f"block_tokens={block_tokens} leaves no room for document text: the ID frame alone takes "
                    f"{len(head) + len(tail)} tokens; use block_tokens >= {len(head) + len(tail) + 16}"
                )
            body = body[:budget]
        cuts[j] = DocumentCut(words, min(words, max_words or words), had if block_tokens is not None else None,
                              len(body) if block_tokens is not None else None)
        blocks.append(head + body + tail)

    b0 = len(head0)
    longest = max(len(b) for b in blocks)
    final_start = int(final_offset)
    if max_positions is not None:
        # The last block must end inside the model's context: clamp the offset down (never below the
        # end of the document range, or the last block would overlap the documents' positions).
        final_start = min(final_start, int(max_positions) - len(last))
    if final_start < b0 + longest:
        raise ValueError(
            f"the last block cannot start at position {final_start}: block 0 ({b0} tokens) and the longest "
            f"document block ({longest} tokens) need positions up to {b0 + longest}"
            + (f" and the model's context is {max_positions} positions" if max_positions is not None else "")
            + "; lower block_tokens, shorten the query, or raise final_offset"
        )

    input_ids = list(head0)
    position_ids = list(range(b0))
    offsets = [0, b0]
    for b in blocks:
        input_ids += b
        position_ids += range(b0, b0 + len(b))
        offsets.append(offsets[-1] + len(b))
    input_ids += last
    position_ids += range(final_start, final_start + len(last))
    offsets.append(offsets[-1] + len(last))
    return BlockPrompt(input_ids, position_ids, offsets, order, labels, final_start, tuple(cuts))
