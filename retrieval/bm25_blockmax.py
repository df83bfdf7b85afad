"""Exact top-k BM25 with block-max bounds: a query reads only the posting blocks that can reach its top k.

The documents are cut into blocks of ``2**shift`` consecutive document indices (256 by default). For
every term with at least ``min_postings`` postings (the frequent ones: "what", "how" on MS MARCO) a
row holds, per block, an upper bound of the term's highest score in that block (uint16 levels of
the term's highest score, rounded up). For a query, the bound of a block is the sum over its terms
of ``count * bound``; a rare term (no row) is read whole and gives its exact per-block maxima.

:func:`blockmax_top` then scores exactly the documents of the blocks with the highest bounds until
``k`` documents have a score, takes the ``k``-th best of those as the threshold ``theta``, and scores
every other block whose bound reaches ``theta * (1 - MARGIN)``; all other blocks are skipped (for
the frequent terms only the postings inside the chosen blocks are read: two binary searches per
block). A document in a skipped block scores at most its block's bound, strictly below ``theta``, so
the candidates hold the exact top ``k`` and every document tied with the ``k``-th. Candidates are
scored as the sparse product scores them (float32 ``count * score`` products summed in term-id
order), so rankings and scores are bit-identical to the unpruned search (tested). Scores must be
non-negative (``lucene``, ``robertson``, ``atire``).

The rows are computed once per index (one pass over the frequent terms' postings: seconds at
MS MARCO size), at build time or at the first query that needs them, and stored beside the index
(``blockmax.npy``, ``blockmax.terms.npy``, ``blockmax.json``): the json records a key (the index's
own checksums of ``data.npy`` / ``indices.npy`` / ``indptr.npy`` and the parameters) and the sha256
of both files, so a stale or damaged sidecar is recomputed, never used. An index without a sidecar
(built before this module) loads and answers the same; its first pruned query writes the sidecar
(or keeps it in memory when the folder is read-only).
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

logger = logging.getLogger("attnsift.retrieval.bm25")

SIDECAR_VERSION = 2
#: Documents per block: ``2**BLOCK_SHIFT``. Module attributes, so tests can force small blocks.
BLOCK_SHIFT = 8
#: Terms in at least ``ROW_FRACTION`` of the documents (and ``MIN_POSTINGS`` of them) get a stored row
#: (about a hundred terms at MS MARCO size); rarer terms are read whole by each query.
ROW_FRACTION = 1 / 32
MIN_POSTINGS = 4096
LEVELS = 65535
#: A query whose threshold still leaves this fraction of the blocks to score takes the product.
GIVE_UP = 0.25
#: Relative margin of every bound comparison: far above float32 rounding of a sum of a few terms.
MARGIN = 1e-4
FILES = ("blockmax.npy", "blockmax.terms.npy", "blockmax.bits.npy")

_LOCK = threading.Lock()


@dataclass(frozen=True)
class BlockMax:
    """Per-block upper bounds of the frequent terms' scores.

    Attributes
    ----------
    shift : int
        Blocks hold ``2**shift`` consecutive document indices.
    min_postings : int
        Terms with at least this many postings have a row.
    terms : np.ndarray
        ``[T]`` int32 term ids with a row, ascending.
    maxima : np.ndarray
        ``[T, B]`` uint16: block ``j`` of term ``terms[i]`` scores at most ``maxima[i, j] * scale[i]``.
    scale : np.ndarray
        ``[T]`` float64, the term's highest score over ``LEVELS`` (times ``1 + 1e-6``).
    bits : np.ndarray
        ``[T, ceil(N / 8)]`` uint8: which documents hold the term (``np.packbits`` order), so a
        candidate that lacks a frequent term is bounded without it and not looked up in its postings.
    """

    shift: int
    min_postings: int
    terms: np.ndarray
    maxima: np.ndarray
    scale: np.ndarray
    bits: np.ndarray

    def has(self, row: int, docs: np.ndarray) -> np.ndarray:
        """Whether each of ``docs`` holds the term of ``row`` (bool ``[len(docs)]``)."""
        return ((self.bits[row][docs >> 3] >> (7 - (docs & 7)).astype(np.uint8)) & 1).astype(bool)

    @property
    def n_blocks(self) -> int:
        return int(self.maxima.shape[1])


def _scale(term_max: np.ndarray, terms: np.ndarray) -> np.ndarray:
    return np.maximum(term_max[terms].astype(np.float64), 0.0) * ((1 + 1e-6) / LEVELS)


def row_min_postings(n_docs: int) -> int:
    """Postings a term needs for a block row in an index of ``n_docs`` documents."""
    return max(MIN_POSTINGS, int(n_docs * ROW_FRACTION))


def compute_blockmax(index: Any, shift: int | None = None, min_postings: int | None = None) -> BlockMax:
    """The block maxima of ``index`` (a :class:`~attnsift.indexes.bm25_index.BM25IndexData`).

    Reads the postings of every term with at least ``min_postings`` of them
    (:func:`row_min_postings`) once.
    """
    n = len(index.doc_ids)
    shift = BLOCK_SHIFT if shift is None else shift
    min_postings = row_min_postings(n) if min_postings is None else min_postings
    n_blocks = max(1, ((n - 1) >> shift) + 1)
    indptr = np.asarray(index.indptr)
    terms = np.flatnonzero(np.diff(indptr) >= max(1, min_postings)).astype(np.int32)
    term_max = index.max_scores()
    scale = _scale(term_max, terms)
    maxima = np.zeros((len(terms), n_blocks), dtype=np.uint16)
    bits = np.zeros((len(terms), (n + 7) // 8), dtype=np.uint8)
    data, indices = np.asarray(index.data), np.asarray(index.indices)
    present = np.zeros(n, dtype=bool)
    for i, t in enumerate(terms.tolist()):
        s, e = int(indptr[t]), int(indptr[t + 1])
        blk = indices[s:e] >> shift
        starts = np.flatnonzero(np.concatenate(([True], blk[1:] != blk[:-1])))
        top = np.maximum.reduceat(data[s:e], starts).astype(np.float64)
        if scale[i] > 0:
            q = np.ceil(np.maximum(top, 0.0) / scale[i])  # scale carries 1e-6 headroom: q * scale >= top
            maxima[i, blk[starts]] = np.minimum(q, LEVELS).astype(np.uint16)
        present[indices[s:e]] = True
        bits[i] = np.packbits(present)
        present[indices[s:e]] = False
    return BlockMax(shift, min_postings, terms, maxima, scale, bits)


# ---------------------------------------------------------------------------------------- sidecar
def sidecar_key(manifest: Mapping[str, Any], shift: int, min_postings: int) -> str | None:
    """What the sidecar must match: the index's checksums and the parameters (None: no checksums)."""
    files = manifest.get("files", {})
    try:
        sums = [files[f]["sha256"] for f in ("data.npy", "indices.npy", "indptr.npy")]
    except (KeyError, TypeError):
        return None
    raw = json.dumps([SIDECAR_VERSION, sums, manifest.get("num_docs"), shift, min_postings, LEVELS])
    return hashlib.sha256(raw.encode()).hexdigest()


def read_sidecar(folder: Path, key: str, term_max: np.ndarray, verify: bool) -> BlockMax | None:
    """The stored block maxima, or None when absent, stale (another key) or damaged (logged)."""
    from attnsift.io import sha256_file

    meta_path = folder / "blockmax.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("key") != key:
            logger.info("%s is for another index or other parameters; recomputing the block maxima", meta_path)
            return None
        for name in FILES:
            info, p = meta["files"][name], folder / name
            if p.stat().st_size != info["bytes"] or (verify and sha256_file(p) != info["sha256"]):
                logger.warning("%s does not match its checksum in blockmax.json; recomputing the block maxima", p)
                return None
        terms = np.load(folder / "blockmax.terms.npy", allow_pickle=False)
        maxima = np.load(folder / "blockmax.npy", allow_pickle=False, mmap_mode="r")
        bits = np.load(folder / "blockmax.bits.npy", allow_pickle=False, mmap_mode="r")
        if (maxima.ndim != 2 or maxima.shape[0] != len(terms) or maxima.dtype != np.uint16
                or bits.ndim != 2 or bits.shape[0] != len(terms) or bits.dtype != np.uint8):
            return None
        return BlockMax(int(meta["shift"]), int(meta["min_postings"]), terms, maxima, _scale(term_max, terms), bits)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("cannot read the block maxima beside the index (%s); recomputing them", exc)
        return None


def write_sidecar(folder: Path, bm: BlockMax, key: str) -> None:
    """Write ``bm`` into ``folder`` (each file atomically, the json last)."""
    from attnsift.io import atomic_file, atomic_write_json, sha256_file

    for name, arr in zip(FILES, (bm.maxima, bm.terms, bm.bits)):
        with atomic_file(folder / name, "wb", encoding=None) as fh:
            np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)
    files = {n: {"bytes": (folder / n).stat().st_size, "sha256": sha256_file(folder / n)} for n in FILES}
    atomic_write_json(folder / "blockmax.json", {"version": SIDECAR_VERSION, "key": key, "shift": bm.shift,
                                                 "min_postings": bm.min_postings, "levels": LEVELS, "files": files})


def build_sidecar(folder: Path, index: Any, manifest: Mapping[str, Any]) -> BlockMax:
    """Compute the block maxima of the saved ``index`` and store them in ``folder``."""
    bm = compute_blockmax(index)
    key = sidecar_key(manifest, bm.shift, bm.min_postings)
    if key is not None:
        write_sidecar(folder, bm, key)
    return bm


def blockmax_for(retriever: Any) -> BlockMax:
    """The retriever's block maxima: from memory, from the sidecar beside its index, or computed
    (and then stored beside the index when it was loaded from a folder that can be written)."""
    index = retriever._index
    want = (BLOCK_SHIFT, row_min_postings(len(index.doc_ids)))
    bm = retriever.__dict__.get("_blockmax")
    if bm is not None and (bm.shift, bm.min_postings) == want:
        return bm
    with _LOCK:
        bm = retriever.__dict__.get("_blockmax")
        if bm is not None and (bm.shift, bm.min_postings) == want:
            return bm
        source = retriever.__dict__.get("_source")  # (folder, manifest, verify) when loaded from disk
        key = sidecar_key(source[1], *want) if source else None
        bm = read_sidecar(source[0], key, index.max_scores(), source[2]) if key else None
        if bm is None:
            bm = compute_blockmax(index)
            if key:
                try:
                    write_sidecar(source[0], bm, key)
                except OSError as exc:
                    logger.info("block maxima kept in memory: cannot write them beside %s (%s)", source[0], exc)
        retriever._blockmax = bm
        return bm


# ---------------------------------------------------------------------------------------- search
def _gather(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(lo[i], hi[i])`` for all i."""
    cnt = hi - lo
    total = int(cnt.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    starts = np.cumsum(cnt) - cnt
    return np.repeat(lo.astype(np.int64) - starts, cnt) + np.arange(total, dtype=np.int64)


class _Query:
    """One query's terms over one index: the exact scoring of given documents or blocks."""

    def __init__(self, index: Any, bm: BlockMax, tids: np.ndarray, counts: np.ndarray) -> None:
        self.data, self.indices, indptr = np.asarray(index.data), np.asarray(index.indices), index.indptr
        self.bm, self.shift = bm, bm.shift
        rows = np.searchsorted(bm.terms, tids)
        # (start, end, count, block row or -1, (docs, count * scores) once read whole, row in table
        # or -1), ascending term ids
        self.terms: list[list[Any]] = []
        for ti in range(len(tids)):
            t = int(tids[ti])
            s, e, row = int(indptr[t]), int(indptr[t + 1]), int(rows[ti])
            if e > s:
                has_row = row < len(bm.terms) and bm.terms[row] == t
                self.terms.append([s, e, np.float32(counts[ti]), row if has_row else -1, None, -1])
        self.table = np.zeros((0, 0), dtype=np.float32)
        self.frequent = [term for term in self.terms if term[3] >= 0]

    def read(self, term: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        if term[4] is None:
            s, e, c = term[0], term[1], term[2]
            term[4] = (self.indices[s:e], c * self.data[s:e])
        return term[4]

    def score_docs(self, docs: np.ndarray, rows: np.ndarray | None = None,
                   holds: Mapping[int, np.ndarray] | None = None) -> np.ndarray:
        """float32 scores of ``docs`` (ascending), summed as the sparse product sums them; ``rows``:
        their rows in ``table`` (the rare terms' scores of the documents they match), if all have one;
        ``holds``: block row -> which of ``docs`` hold that frequent term (only those are looked up)."""
        out = np.zeros(len(docs), dtype=np.float32)
        keys = docs.astype(self.indices.dtype)
        for term in self.terms:  # ascending term ids: the product's order of summation
            if rows is not None and term[5] >= 0:
                out += self.table[term[5], rows]  # 0 where absent: adding it changes nothing
                continue
            if holds is not None and term[3] in holds:
                has = np.flatnonzero(holds[term[3]])
                post = self.indices[term[0] : term[1]]
                pos = np.searchsorted(post, keys[has])  # every one of them is there
                add = np.zeros(len(docs), dtype=np.float32)
                add[has] = term[2] * self.data[term[0] + pos]
                out += add
                continue
            if term[4] is not None:
                d, v = term[4]
            else:
                d, v = self.indices[term[0] : term[1]], None
            pos = np.minimum(np.searchsorted(d, keys), len(d) - 1)
            hit = d[pos] == keys
            vals = v[pos] if v is not None else term[2] * self.data[term[0] + pos]
            out += np.where(hit, vals, np.float32(0))
        return out

    def score_blocks(self, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every document of ``blocks`` (ascending block ids) with a score > 0, and its float32 score."""
        shift, size = self.shift, 1 << self.shift
        slot = np.full(self.bm.n_blocks, -1, dtype=np.int64)
        slot[blocks] = np.arange(len(blocks))
        acc = np.zeros(len(blocks) << shift, dtype=np.float32)
        b = blocks.astype(self.indices.dtype)
        for term in self.terms:  # ascending term ids: the product's order of summation
            if term[4] is not None:
                d, v = term[4]
                sl = slot[d >> shift]
                keep = sl >= 0
                d, v, sl = d[keep], v[keep], sl[keep]
            else:
                s = term[0]
                post = self.indices[s : term[1]]
                pos = _gather(np.searchsorted(post, b << shift), np.searchsorted(post, (b + 1) << shift)) + s
                d = self.indices[pos]
                v = term[2] * self.data[pos]
                sl = slot[d >> shift]
            acc[(sl << shift) + (d & (size - 1))] += v  # documents unique within a term
        nz = np.flatnonzero(acc > 0)
        return (blocks[nz >> shift].astype(np.int64) << shift) + (nz & (size - 1)), acc[nz]


def _merge(q: _Query, terms: list[list[Any]]) -> tuple[np.ndarray, np.ndarray]:
    """The documents of ``terms`` (read whole), ascending, and ``[len(terms), n]`` float32 each
    term's score in each (0: absent). Each list is sorted: a stable sort of their concatenation
    only merges them."""
    reads = [q.read(t) for t in terms]
    for j, t in enumerate(terms):
        t[5] = j
    if not reads:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    if len(reads) == 1:
        return reads[0][0], reads[0][1][None, :]
    d_all = np.concatenate([d for d, _ in reads])
    order = np.argsort(d_all, kind="stable")
    d_all = d_all[order]
    first = np.concatenate(([True], d_all[1:] != d_all[:-1]))
    table = np.zeros((len(reads), int(first.sum())), dtype=np.float32)
    table[np.repeat(np.arange(len(reads)), [len(d) for d, _ in reads])[order], np.cumsum(first) - 1] = (
        np.concatenate([v for _, v in reads])[order])
    return d_all[first], table


def _kth(values: np.ndarray, k: int) -> float:
    return float(np.partition(values, len(values) - k)[len(values) - k]) if len(values) >= k else 0.0


def blockmax_top(index: Any, bm: BlockMax, tids: np.ndarray, counts: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Candidates that hold the exact top ``k`` of one query, with their exact scores.

    The query's rare terms (no block row) are read whole into partial sums; its frequent terms
    bound each block. Documents of blocks whose bound reaches the threshold are scored whole (the
    frequent terms read only there); other documents with a partial sum are kept when their partial
    sum plus their block's bound reaches it, and scored by looking their frequent terms up.

    Parameters
    ----------
    index : BM25IndexData
    bm : BlockMax
        The index's block maxima (:func:`blockmax_for`).
    tids : np.ndarray
        ``[m]`` the query's term ids, ascending, unique.
    counts : np.ndarray
        ``[m]`` float32 how often each term occurs in the query.
    k : int

    Returns
    -------
    (docs, scores) or None
        ``docs`` int ``[c]`` unique, ``scores`` float32 ``[c]`` > 0, equal to the sparse product's
        scores of those documents; every document of the exact top ``k`` (and every one tied with the
        ``k``-th) is among them. None when a term's scores may be negative, or when the bounds leave
        more than ``GIVE_UP`` of the blocks to score (the caller runs the product).
    """
    if len(tids) and float(index.max_scores()[tids].min()) <= 0:
        return None  # partial sums would not bound the scores from below
    q = _Query(index, bm, tids, counts)
    shift, n_blocks = bm.shift, bm.n_blocks
    ub = np.zeros(n_blocks, dtype=np.float64)  # bound of the frequent terms in each block
    rare = []
    for term in q.terms:
        if term[3] >= 0:
            ub += bm.maxima[term[3]] * (float(term[2]) * bm.scale[term[3]])
        else:
            rare.append(term)
    union, table = _merge(q, rare)  # the rare terms read whole
    q.table = table
    part = table.sum(axis=0, dtype=np.float64)  # the partial sums of the terms read whole
    live = np.flatnonzero(ub > 0)
    done = np.zeros(n_blocks, dtype=bool)
    found_d: list[np.ndarray] = []
    found_v: list[np.ndarray] = []
    theta = _kth(part, k)
    # blocks in decreasing bound, in growing batches, while their bound reaches the threshold; each
    # batch's exact scores raise the threshold (a lower bound of the k-th score: exact scores and the
    # partial sums of documents outside the scored blocks, all distinct documents)
    postings = sum(t[1] - t[0] for t in q.terms if t[3] >= 0)
    per_block = max(1.0, min(float(1 << shift), postings / max(len(live), 1)))
    # a block's bound is reached by one of its documents when one frequent term bounds it: k - |union|
    # blocks of the best bounds give k documents at least about that good
    batch = max(16, int(4 * k / per_block) + 1, k - len(union))
    while True:
        todo = live[(ub[live] >= theta * (1 - MARGIN)) & ~done[live]]
        if not len(todo):
            break
        if theta > 0 and len(todo) > len(live) * GIVE_UP:
            return None  # the bounds prune little (frequent terms only): the sparse product is as fast
        if len(todo) > batch:
            todo = todo[np.argpartition(-ub[todo], batch - 1)[:batch]]
            todo.sort()
        d, v = q.score_blocks(todo)
        done[todo] = True
        found_d.append(d)
        found_v.append(v)
        theta = max(theta, _kth(np.concatenate(found_v + [part[~done[union >> shift]]]), k))
        batch *= 2
    blk = union >> shift
    cut = theta * (1 - MARGIN)
    rows = np.flatnonzero(~done[blk] & (part + ub[blk] >= cut))
    look = union[rows]  # ascending
    holds = {}
    if len(look) and q.frequent:
        # a tighter bound: each frequent term counts only for the candidates that hold it
        lb = look >> shift
        bound = part[rows].copy()
        for term in q.frequent:
            holds[term[3]] = has = bm.has(term[3], look)
            bound[has] += bm.maxima[term[3]][lb[has]] * (float(term[2]) * bm.scale[term[3]])
        keep = bound >= cut
        rows, look = rows[keep], look[keep]
        holds = {row: has[keep] for row, has in holds.items()}
    if len(look):
        v = q.score_docs(look, rows, holds)
        found_d.append(look)
        found_v.append(v)
    if not found_d:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    docs = np.concatenate(found_d) if len(found_d) > 1 else found_d[0]
    vals = np.concatenate(found_v) if len(found_v) > 1 else found_v[0]
    keep = vals > 0
    return (docs, vals) if keep.all() else (docs[keep], vals[keep])
