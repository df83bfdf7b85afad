"""Centroid scores and candidate generation of the compiled plaid path, from ``S^T`` in chunks.

The plaid search needs each query token's score against every centroid, ``S = Q C^T``. The kernels of
:mod:`.plaid_kernel` read it transposed and in chunks of query tokens (``S^T``, ``[chunks, K, width]``,
:func:`~attnsift.indexes.plaid_kernel.layout`), so it is computed here in that layout directly:

- :func:`centroid_scores_t`: per centroid ``k`` and chunk, ``S^T[k, :] = sum over d of C[k, d] * Q^T[d, :]``,
  four centroids at a time, the query chunk's ``width`` lanes in vector registers (fused multiply-adds in a
  fixed order: ``d`` ascending), one thread, the GIL released. A BLAS product of the ``[Lq, dim]`` query
  with the ``[K, dim]`` centroids is a short-and-wide shape MKL handles poorly (~1.1-1.9 ms for SciFact's
  21 x 384 x 4,096 on this machine's core, against ~0.7 ms here) and uses its own thread pool, which
  contends with a pool of query threads; the transposition to ``S^T`` comes free.
- :func:`probe`: each query token's ``ncells`` best centroids (ties: the lower id) and the candidate
  documents of their inverted lists, read from ``S^T`` (centroids outer, query tokens inner: one pass in
  memory order).

Both are deterministic: a query's scores depend on nothing but the query and the index.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from attnsift.indexes.plaid_kernel import LANES, _SCRATCH, _jit, _numba, layout

if _numba is not None:
    from llvmlite import ir as _ir
    from numba.core import cgutils as _cgutils
    from numba.core import types as _types
    from numba.extending import intrinsic as _intrinsic

#: Centroids scored together (their rows share each load of the query chunk).
GROUP = 4


def _rows_typer(typingctx, c_addr, q_addr, o_addr, dim, ncent, nvec):  # pragma: no cover - compiled
    """``out[r, :] = sum over d < dim of C[r, d] * Q^T[d, :]`` for ``ncent`` consecutive centroid rows
    (``C`` float32 rows of ``dim``; ``Q^T`` ``[dim, 8 nvec]`` float32; ``out`` rows of ``8 nvec``), the
    ``ncent x nvec`` accumulators in registers, one fused multiply-add per step in ``d`` order. All
    arguments but ``dim`` and the literals ``ncent`` and ``nvec`` are addresses."""
    if not isinstance(ncent, _types.IntegerLiteral) or not isinstance(nvec, _types.IntegerLiteral):
        return None
    nc, nv = ncent.literal_value, nvec.literal_value
    sig = _types.void(_types.uintp, _types.uintp, _types.uintp, _types.intp, ncent, nvec)

    def codegen(context, builder, signature, args):
        c_a, q_a, o_a, n, _, _ = args
        i64, f32 = _ir.IntType(64), _ir.FloatType()
        vec = _ir.VectorType(f32, LANES)
        vptr = vec.as_pointer()
        fma = _cgutils.get_or_insert_function(builder.module, _ir.FunctionType(vec, [vec, vec, vec]),
                                              f"llvm.fma.v{LANES}f32")

        def const(x: int) -> Any:
            return _ir.Constant(i64, x)

        accs = [[_cgutils.alloca_once(builder, vec) for _ in range(nv)] for _ in range(nc)]  # LLVM: registers
        for row in accs:
            for a in row:
                builder.store(_ir.Constant(vec, None), a)
        row_bytes = builder.mul(n, const(4))
        with _cgutils.for_range(builder, n) as loop:
            d = loop.index
            q_row = builder.add(q_a, builder.mul(d, const(4 * LANES * nv)))
            qs = [builder.load(builder.inttoptr(builder.add(q_row, const(4 * LANES * j)), vptr), align=4)
                  for j in range(nv)]
            for r in range(nc):
                at = builder.add(c_a, builder.add(builder.mul(const(r), row_bytes), builder.mul(d, const(4))))
                x = builder.load(builder.inttoptr(at, f32.as_pointer()), align=4)
                b = _ir.Constant(vec, None)
                for lane in range(LANES):
                    b = builder.insert_element(b, x, _ir.Constant(_ir.IntType(32), lane))
                for j in range(nv):
                    builder.store(builder.call(fma, [b, qs[j], builder.load(accs[r][j])]), accs[r][j])
        for r in range(nc):
            for j in range(nv):
                at = builder.add(o_a, const(4 * LANES * (r * nv + j)))
                builder.store(builder.load(accs[r][j]), builder.inttoptr(at, vptr), align=4)
        return context.get_dummy_value()

    return sig, codegen


_rows = _intrinsic(_rows_typer) if _numba is not None else None


@_jit
def _group(ca, qa, ob, dim, nv, four):  # pragma: no cover - compiled
    """:func:`_rows` for one group of 4 centroids (``four``) or one centroid; ``nv`` to a literal."""
    if four:
        if nv == 1:
            _rows(ca, qa, ob, dim, 4, 1)
        elif nv == 2:
            _rows(ca, qa, ob, dim, 4, 2)
        elif nv == 3:
            _rows(ca, qa, ob, dim, 4, 3)
        elif nv == 4:
            _rows(ca, qa, ob, dim, 4, 4)
        elif nv == 5:
            _rows(ca, qa, ob, dim, 4, 5)
        elif nv == 6:
            _rows(ca, qa, ob, dim, 4, 6)
        elif nv == 7:
            _rows(ca, qa, ob, dim, 4, 7)
        else:
            _rows(ca, qa, ob, dim, 4, 8)
    elif nv == 1:
        _rows(ca, qa, ob, dim, 1, 1)
    elif nv == 2:
        _rows(ca, qa, ob, dim, 1, 2)
    elif nv == 3:
        _rows(ca, qa, ob, dim, 1, 3)
    elif nv == 4:
        _rows(ca, qa, ob, dim, 1, 4)
    elif nv == 5:
        _rows(ca, qa, ob, dim, 1, 5)
    elif nv == 6:
        _rows(ca, qa, ob, dim, 1, 6)
    elif nv == 7:
        _rows(ca, qa, ob, dim, 1, 7)
    else:
        _rows(ca, qa, ob, dim, 1, 8)


@_jit
def _scores_t(centroids, q_t, out):  # pragma: no cover - compiled
    """``out[ch, k, :] = sum over d of centroids[k, d] * q_t[ch, d, :]`` (``q_t`` ``[nch, dim, cw]``,
    ``cw`` a multiple of 8 up to 64; ``out`` ``[nch, K, cw]``), :data:`GROUP` centroids at a time."""
    k, dim = centroids.shape
    nch, _, cw = q_t.shape
    nv = cw // 8
    full = k - k % 4
    c_a, q_a, o_a = centroids.ctypes.data, q_t.ctypes.data, out.ctypes.data
    for ch in range(nch):
        qa, oa = q_a + ch * dim * cw * 4, o_a + ch * k * cw * 4
        for c in range(0, full, 4):
            _group(c_a + c * dim * 4, qa, oa + c * cw * 4, dim, nv, True)
        for c in range(full, k):
            _group(c_a + c * dim * 4, qa, oa + c * cw * 4, dim, nv, False)


@_jit
def _probe(st, lq, ncells, ivf_offsets, ivf_docs, acc, mark):  # pragma: no cover - compiled
    """Candidate generation (step 2 of :class:`~attnsift.retrieval.plaid.PlaidSearcher`) from ``S^T``
    (``[nch, K, cw]``): each query token's ``ncells`` best centroids (ties: lower id), then per document
    ``sum over query tokens of the best probed score it holds, else that token's lowest probed score``.
    ``acc`` (float64) and ``mark`` (int32), one entry per document, are zero on entry and on return.
    Returns (documents in first-seen order, their scores)."""
    nch, k, cw = st.shape
    cells = np.empty((lq, ncells), np.int64)
    cscore = np.empty((lq, ncells), np.float32)
    filled = np.zeros(lq, np.int64)
    floor = np.full(nch * cw, -np.inf, np.float32)  # a score must beat this to enter a token's list
    floor[lq:] = np.inf  # padding lanes: never
    for c in range(k):  # centroids in id order for every token: a tie keeps the lower id, seen first
        for ch in range(nch):
            row = st[ch, c]
            lo = floor[ch * cw: ch * cw + cw]
            hit = False
            for lane in range(cw):  # vectorised: most centroids enter no token's list
                hit |= row[lane] > lo[lane]
            if not hit:
                continue
            for lane in range(min(cw, lq - ch * cw)):
                x = row[lane]
                if not x > lo[lane]:
                    continue
                i = ch * cw + lane
                f = filled[i]
                j = f if f < ncells else ncells - 1
                while j > 0 and x > cscore[i, j - 1]:
                    if j < ncells:
                        cscore[i, j] = cscore[i, j - 1]
                        cells[i, j] = cells[i, j - 1]
                    j -= 1
                cscore[i, j] = x
                cells[i, j] = c
                if f < ncells:
                    filled[i] = f + 1
                if filled[i] == ncells:
                    lo[lane] = cscore[i, ncells - 1]
    base = 0.0
    total = 0
    for i in range(lq):
        base += cscore[i, ncells - 1]
        for r in range(ncells):
            c = cells[i, r]
            total += ivf_offsets[c + 1] - ivf_offsets[c]
    found = np.empty(total, np.int64)
    nfound = 0
    for i in range(lq):
        low = np.float64(cscore[i, ncells - 1])
        for r in range(ncells):  # best cell first: a document's first visit by token i is its best
            c = cells[i, r]
            gain = np.float64(cscore[i, r]) - low
            for e in range(ivf_offsets[c], ivf_offsets[c + 1]):
                d = ivf_docs[e]
                m = mark[d]
                if m == i + 1:
                    continue
                if m == 0:
                    found[nfound] = d
                    nfound += 1
                mark[d] = i + 1
                acc[d] += gain
    docs = found[:nfound].copy()
    scores = np.empty(nfound, np.float64)
    for j in range(nfound):
        d = docs[j]
        scores[j] = acc[d] + base
        acc[d] = 0.0
        mark[d] = 0
    return docs, scores


# ----------------------------------------------------------------------------- wrappers
def query_t(query_tokens: np.ndarray) -> np.ndarray:
    """``[Lq, dim]`` query tokens -> ``Q^T`` in chunks, ``[nch, dim, cw]`` float32, zero beyond ``Lq``
    (:func:`~attnsift.indexes.plaid_kernel.layout`)."""
    q = np.asarray(query_tokens, dtype=np.float32)
    nch, cw = layout(q.shape[0])
    qt = np.zeros((q.shape[1], nch * cw), np.float32)
    qt[:, : q.shape[0]] = q.T
    return np.ascontiguousarray(qt.reshape(q.shape[1], nch, cw).transpose(1, 0, 2))


def centroid_scores_t(index: Any, query_tokens: np.ndarray) -> np.ndarray:
    """``S^T`` of ``query_tokens`` (``[Lq, dim]``) against ``index``'s centroids, ``[nch, K, cw]`` float32 in
    the kernels' layout (:func:`~attnsift.indexes.plaid_kernel.transposed` of ``Q C^T``, zero beyond
    ``Lq``), by :func:`_scores_t`."""
    qt = query_t(query_tokens)
    centroids = getattr(index, "_centroids32", None)
    if centroids is None:
        centroids = np.ascontiguousarray(index.centroids, dtype=np.float32)
        index._centroids32 = centroids
    out = np.empty((qt.shape[0], centroids.shape[0], qt.shape[2]), np.float32)
    _scores_t(centroids, qt, out)
    return out


def _scratch(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-thread, per-size zeroed ``(acc float64 [n], mark int32 [n])`` for :func:`probe`."""
    got = getattr(_SCRATCH, "arrays", None)
    if got is None or got[0].shape[0] != n:
        got = (np.zeros(n, np.float64), np.zeros(n, np.int32))
        _SCRATCH.arrays = got
    return got


def probe(index: Any, st: np.ndarray, lq: int, ncells: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate documents (sorted, int64) and their probed-centroid scores (float64) from ``S^T`` (``st``,
    ``[nch, K, cw]``, ``lq`` query tokens), as :meth:`PlaidSearcher.approximate
    <attnsift.retrieval.plaid.PlaidSearcher.approximate>` computes them."""
    acc, mark = _scratch(index.num_docs)
    docs, scores = _probe(st, int(lq), int(ncells), index.ivf_offsets, index.ivf_docs, acc, mark)
    order = np.argsort(docs)
    return docs[order], scores[order]
