"""Training prompts for BlockRank fine-tuning: which documents a prompt holds, and its tokens.

Candidates per query: its relevant documents (qrels grade >= the data set's ``rel_level``; at most
``max_positives``, highest grade first, seeded random within a grade) plus the top BM25 non-relevant
documents up to ``candidates``, shuffled with a seeded RNG. Queries without relevant documents are
skipped. Every choice is a function of the seed, so a resumed run sees exactly the prompts an
uninterrupted one would.

Prompts are built by the same function as inference
(:func:`attnsift.rerank.blockrank_prompts.build_blockrank_prompt`, IDs ``0..N-1`` in prompt order, the
last block at the same position offset); the answer tokens (the relevant IDs) are appended to it.
"""
from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from attnsift.types import Document, Query

if TYPE_CHECKING:  # pragma: no cover
    from attnsift.eval.datasets import Dataset

__all__ = ["QUERY_SAMPLES", "TrainExample", "build_examples", "examples_digest", "EncodedExample", "encode_example"]

log = logging.getLogger(__name__)

QUERY_SAMPLES = ("random", "first")


@dataclass(frozen=True)
class TrainExample:
    """One training prompt: a query and its candidates in prompt order.

    Attributes
    ----------
    query : Query
    documents : tuple of Document
        In prompt order; the ID written for ``documents[i]`` is ``i``.
    grades : tuple of int
        Qrels grade of each document (0 for BM25 negatives).
    positive : tuple of bool
        Relevant (grade >= rel_level) documents.
    """

    query: Query
    documents: tuple[Document, ...]
    grades: tuple[int, ...]
    positive: tuple[bool, ...]

    def answer_ids(self) -> list[int]:
        """IDs the model should write: the relevant documents, highest grade first, then by ID."""
        return sorted((i for i, p in enumerate(self.positive) if p), key=lambda i: (-self.grades[i], i))

    def answer_text(self) -> str:
        """The completion after ``Final Answer: [``, e.g. ``"3, 7]"``."""
        return ", ".join(str(i) for i in self.answer_ids()) + "]"


def build_examples(dataset: "Dataset", candidates: int, max_positives: int, seed: int = 0,
                   max_queries: int | None = None, bm25_depth: int = 100,
                   progress: bool | None = False, sample: str = "random") -> list[TrainExample]:
    """Sample the training prompts of ``dataset`` (relevant documents + BM25 negatives, shuffled).

    Parameters
    ----------
    dataset : Dataset
        Its ``queries``, ``qrels``, ``corpus`` and ``rel_level`` are used.
    candidates : int
        Documents per prompt.
    max_positives : int
        Relevant documents per prompt, at most (highest grade first; seeded random within a grade).
    seed : int
    max_queries : int, optional
        Keep N usable queries: a sample seeded by ``seed`` (``sample="random"``, kept in file order) or
        the first N (``sample="first"``).
    bm25_depth : int
        BM25 is asked for ``candidates + bm25_depth`` documents; negatives are its top non-relevant ones.

    Returns
    -------
    list of TrainExample, in query file order.

    Raises
    ------
    ValueError
        No query has a relevant document that is in the corpus.
    """
    from attnsift.retrieval.bm25 import BM25Retriever

    if sample not in QUERY_SAMPLES:
        raise ValueError(f"sample must be one of {', '.join(QUERY_SAMPLES)}, got {sample!r}")
    corpus = dataset.corpus
    rel = dataset.rel_level
    usable: list[Query] = []
    for qid, query in dataset.queries.items():
        judged = dataset.qrels.get(qid, {})
        if any(g >= rel and d in corpus for d, g in judged.items()):
            usable.append(query)
        if sample == "first" and max_queries is not None and len(usable) >= max_queries:
            break
    if sample == "random" and max_queries is not None and len(usable) > max_queries:
        keep = set(random.Random(f"{seed}|queries").sample(range(len(usable)), max_queries))
        usable = [q for i, q in enumerate(usable) if i in keep]
    if not usable:
        raise ValueError(
            f"BlockRank training needs at least 1 query with a relevant document (qrels grade >= {rel}) in the "
            f"corpus; data set {dataset.name!r} (split {dataset.split!r}) has 0 of its {len(dataset.queries)} judged "
            "queries: choose a split with relevance judgements such as nfcorpus/train"
        )
    if max_queries is not None and len(usable) < max_queries:
        log.warning("--max-queries %d: data set %r (split %r) has only %d queries with a relevant document in "
                       "the corpus; training on those", max_queries, dataset.name, dataset.split, len(usable))
    bm25 = BM25Retriever.from_corpus(corpus.iter_documents())
    depth = min(bm25.num_docs, candidates + bm25_depth)
    run = bm25.retrieve_batch(usable, k=depth, progress=progress)
    examples = []
    for query in usable:
        rng = random.Random(f"{seed}|{query.id}")  # per-query stream: a query's prompt does not depend on the others
        judged = dataset.qrels.get(query.id, {})
        rel_docs = sorted((d for d, g in judged.items() if g >= rel and d in corpus))
        rng.shuffle(rel_docs)
        rel_docs.sort(key=lambda d: -judged[d])  # stable: random order within a grade
        pos = rel_docs[:min(max_positives, candidates - 1)]  # room for at least one negative
        neg = [c.doc_id for c in run[query.id].candidates if judged.get(c.doc_id, 0) < rel][: candidates - len(pos)]
        if not neg:
            log.warning("query %s: BM25 found no non-relevant document; skipped", query.id)
            continue
        chosen = [(d, judged[d], True) for d in pos] + [(d, int(judged.get(d, 0)), False) for d in neg]
        rng.shuffle(chosen)
        examples.append(TrainExample(
            query=query,
            documents=tuple(corpus[d] for d, _, _ in chosen),
            grades=tuple(int(g) for _, g, _ in chosen),
            positive=tuple(p for _, _, p in chosen),
        ))
    if not examples:
        raise ValueError(f"no training prompt could be built from {dataset.name!r} (no BM25 negatives found)")
    return examples


def examples_digest(examples: Sequence[TrainExample]) -> str:
    """A short hash of the training plan (queries, documents, labels), checked on resume."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(ex.query.id.encode())
        for d, g, p in zip(ex.documents, ex.grades, ex.positive):
            h.update(f"|{d.id}:{g}:{int(p)}".encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class EncodedExample:
    """A tokenized training prompt with its answer appended.

    Attributes
    ----------
    input_ids, position_ids : list of int
        [T] prompt + answer tokens (the answer continues the last block's positions).
    block_offsets : list of int
        [B+1] prompt blocks, the answer counted in the last block.
    prompt_tokens : int
        Tp: the prompt's length; the answer is tokens Tp..T-1.
    query_rows : list of int
        The scoring rows (the last ``query_positions`` prompt tokens).
    positive : list of bool
        [B-2] per document block (prompt order).
    """

    input_ids: list[int]
    position_ids: list[int]
    block_offsets: list[int]
    prompt_tokens: int
    query_rows: list[int]
    positive: list[bool]

    @property
    def answer_tokens(self) -> int:
        return len(self.input_ids) - self.prompt_tokens


def encode_example(example: TrainExample, tokenizer: Any, *, block_tokens: int, max_words: int,
                   final_offset: int, max_positions: int | None, query_positions: int = 2) -> EncodedExample:
    """Build the BlockRank prompt of ``example`` (as inference does) and append the answer tokens.

    The prompt's positions are exactly those of inference (same builder, same clamp); the answer tokens
    follow the last block and may run a few positions past ``max_positions`` (RoPE has no table).
    """
    from attnsift.rerank.blockrank_prompts import build_blockrank_prompt

    prompt = build_blockrank_prompt(
        tokenizer, example.query.text, [(d.title, d.text) for d in example.documents],
        block_tokens=block_tokens, max_words=max_words, final_offset=final_offset, max_positions=max_positions,
    )
    answer = list(tokenizer(example.answer_text(), add_special_tokens=False)["input_ids"])
    Tp = prompt.num_tokens
    last_pos = prompt.position_ids[-1]
    P = min(query_positions, prompt.block_offsets[-1] - prompt.block_offsets[-2])
    return EncodedExample(
        input_ids=prompt.input_ids + answer,
        position_ids=prompt.position_ids + list(range(last_pos + 1, last_pos + 1 + len(answer))),
        block_offsets=prompt.block_offsets[:-1] + [Tp + len(answer)],
        prompt_tokens=Tp,
        query_rows=list(range(Tp - P, Tp)),
        positive=list(example.positive),
    )
