"""Compiled (numba) kernels of the plaid search: centroid interaction and exact MaxSim
read straight from the packed codes, fused, one query at a time, one thread.

The numpy path of :class:`~attnsift.indexes.plaid_index.PlaidIndex` builds ``[t, Lq]`` and ``[t, dim]``
intermediates and spends most of its time in byte gathers. Here each step is one loop nest:

- **exact MaxSim**: per query, a table ``T[p, v, i]`` (float32): the residual contribution of byte value ``v``
  at packed-byte position ``p`` to query token ``i`` (``sum over the 8 / nbits dimensions of that byte of
  q_i[d] * weights[d, bucket]``), the query tokens padded to a multiple of 8 (in chunks of at most 64), the
  last axis, contiguous. A document token with centroid ``c``, packed residual bytes ``b`` and stored scale
  ``s`` scores ``(S[c, :] + sum over p of T[p, b[p], :]) * s`` against all query tokens at once; the sums
  stay in vector registers (an LLVM-level intrinsic, :func:`_token_sum_typer`: numba's loop vectoriser alone
  kept them in memory, a store-to-load chain 2-4x slower); the running max per document and the sum over
  query tokens follow in the same loop. No ``[t, Lq]`` or ``[t, dim]`` array is built.
- **centroid interaction**: the running max over a document's distinct centroids of the rows of ``S^T``.
- **centroid scores and candidate generation** (``S^T`` itself, each query token's ``ncells`` best centroids,
  one pass over their inverted lists): :mod:`.plaid_scores`.

Arithmetic: float32 throughout (the numpy path rounds the residuals and the query to bfloat16), in a fixed
order, compiled with ``fastmath=False`` (no reassociation; the vector lanes are independent query tokens),
so a document's score does not depend on the other documents, the batch or the thread. The kernel scores
are the more exact ones: they agree with float64 MaxSim over the same compressed tokens (stored scale
included) to ~2e-7 per query token, and with the numpy path to its bfloat16 rounding (~1e-4 to 5e-4).

``impl="int16"`` (:mod:`.plaid_kernel16`) runs the exact stage from the same table rounded to int16 (half the
bytes, summed in int16 lanes): each score within a stated bound of the float32 one (~1e-4 per query token).

numba is optional (the ``dense`` extra): :func:`resolve` picks the numpy path when it is missing. Compiled
functions are cached on disk (``cache=True``, next to this file or, where that is read-only, in numba's
user cache folder); with no writable cache location they are compiled in memory once per process.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from attnsift.errors import require

#: ``impl`` values of the plaid CPU path (``int16``: the compiled kernels with an int16 exact-stage table).
IMPLS = ("auto", "numba", "int16", "numpy")
#: What ``auto`` picks when numba is importable: the int16 exact stage (SciFact and NFCorpus nDCG@10 / R@100
#: as the float32 one's to 4 digits, 1.3-1.5x faster exact stage; benchmarks/results/late_interaction.md).
AUTO = "int16"
#: Query tokens are padded to a multiple of this (a 256-bit register of float32) ...
LANES = 8
#: ... and split into chunks of at most this many (8 registers of accumulators).
CHUNK = 64

try:  # numba is optional; without it the kernels below are never called
    import numba as _numba
    from llvmlite import ir as _ir
    from numba.core import cgutils as _cgutils
    from numba.core import types as _types
    from numba.extending import intrinsic as _intrinsic
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    _numba = None


def available() -> bool:
    """Whether numba is importable (the compiled path can run)."""
    return _numba is not None


def resolve(impl: str) -> str:
    """``"auto"`` -> :data:`AUTO` when numba is importable, else ``"numpy"``; ``"numba"`` or ``"int16"``
    without numba raises the missing-extra error; anything else outside :data:`IMPLS` is a ValueError."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS} for the plaid CPU path, got {impl!r}")
    if impl == "auto":
        return AUTO if _numba is not None else "numpy"
    if impl != "numpy" and _numba is None:
        require("numba", "dense", purpose=f"the compiled plaid kernels (impl={impl!r}; impl='numpy' needs nothing)")
    return impl


def _jit(fn: Any) -> Any:
    if _numba is None:
        return fn
    try:
        return _numba.njit(cache=True, nogil=True, fastmath=False)(fn)
    except RuntimeError:  # no writable cache location: compile in memory
        return _numba.njit(nogil=True, fastmath=False)(fn)


def layout(lq: int) -> tuple[int, int]:
    """``(chunks, chunk width)`` of ``lq`` query tokens: padded to a multiple of :data:`LANES`, in chunks of at
    most :data:`CHUNK`."""
    width = max(LANES, -(-lq // LANES) * LANES)
    if width <= CHUNK:
        return 1, width
    return -(-lq // CHUNK), CHUNK


def _token_sum_typer(typingctx, t_addr, res_addr, init_addr, out_addr, npos, nvec):  # pragma: no cover - compiled
    """``out[:8 nvec] = init[:] + sum over p < npos of T[p, res[p], :]`` for one token and one chunk of query
    tokens, the ``8 * nvec`` sums kept in registers (``nvec`` vectors of 8 float32; two sets of accumulators,
    even and odd ``p``, added at the end: a fixed order). ``T`` rows are ``8 nvec`` float32 wide, 256 per
    position; all arguments but ``npos`` and ``nvec`` (a literal) are addresses."""
    if not isinstance(nvec, _types.IntegerLiteral):
        return None
    nv = nvec.literal_value
    sig = _types.void(_types.uintp, _types.uintp, _types.uintp, _types.uintp, _types.intp, nvec)

    def codegen(context, builder, signature, args):
        t_a, r_a, i_a, o_a, n, _ = args
        i64 = _ir.IntType(64)
        vec = _ir.VectorType(_ir.FloatType(), LANES)
        vptr = vec.as_pointer()

        def const(x: int) -> Any:
            return _ir.Constant(i64, x)

        def load(addr: Any) -> Any:
            return builder.load(builder.inttoptr(addr, vptr), align=4)

        def row(p: Any) -> Any:  # address of T[p, res[p], 0]
            byte = builder.zext(builder.load(builder.inttoptr(builder.add(r_a, p), _ir.IntType(8).as_pointer())), i64)
            return builder.add(t_a, builder.mul(builder.add(builder.mul(p, const(256)), byte), const(nv * 4 * LANES)))

        acc_a = [_cgutils.alloca_once(builder, vec) for _ in range(nv)]  # promoted to registers by LLVM
        acc_b = [_cgutils.alloca_once(builder, vec) for _ in range(nv)]
        for j in range(nv):
            builder.store(load(builder.add(i_a, const(4 * LANES * j))), acc_a[j])
            builder.store(_ir.Constant(vec, None), acc_b[j])
        half = builder.udiv(n, const(2))
        with _cgutils.for_range(builder, half) as loop:
            p0 = builder.mul(loop.index, const(2))
            ra, rb = row(p0), row(builder.add(p0, const(1)))
            for j in range(nv):
                off = const(4 * LANES * j)
                builder.store(builder.fadd(builder.load(acc_a[j]), load(builder.add(ra, off))), acc_a[j])
                builder.store(builder.fadd(builder.load(acc_b[j]), load(builder.add(rb, off))), acc_b[j])
        with builder.if_then(builder.icmp_unsigned("!=", builder.mul(half, const(2)), n)):
            rl = row(builder.sub(n, const(1)))
            for j in range(nv):
                off = const(4 * LANES * j)
                builder.store(builder.fadd(builder.load(acc_a[j]), load(builder.add(rl, off))), acc_a[j])
        for j in range(nv):
            total = builder.fadd(builder.load(acc_a[j]), builder.load(acc_b[j]))
            builder.store(total, builder.inttoptr(builder.add(o_a, const(4 * LANES * j)), vptr), align=4)
        return context.get_dummy_value()

    return sig, codegen


def _row_add_typer(typingctx, out_addr, a_addr, b_addr, nvec):  # pragma: no cover - compiled
    """``out[:8 nvec] = a + b`` (float32, addresses; ``nvec`` a literal): explicit vector loads and stores, no
    aliasing checks."""
    if not isinstance(nvec, _types.IntegerLiteral):
        return None
    nv = nvec.literal_value
    sig = _types.void(_types.uintp, _types.uintp, _types.uintp, nvec)

    def codegen(context, builder, signature, args):
        o_a, a_a, b_a, _ = args
        i64 = _ir.IntType(64)
        vptr = _ir.VectorType(_ir.FloatType(), LANES).as_pointer()
        for j in range(nv):
            off = _ir.Constant(i64, 4 * LANES * j)
            x = builder.load(builder.inttoptr(builder.add(a_a, off), vptr), align=4)
            y = builder.load(builder.inttoptr(builder.add(b_a, off), vptr), align=4)
            builder.store(builder.fadd(x, y), builder.inttoptr(builder.add(o_a, off), vptr), align=4)
        return context.get_dummy_value()

    return sig, codegen


_token_sum = _intrinsic(_token_sum_typer) if _numba is not None else None
_row_add = _intrinsic(_row_add_typer) if _numba is not None else None


# ----------------------------------------------------------------------------- kernels
@_jit
def _transpose_pad(s, nch, cw):  # pragma: no cover - compiled
    """``s`` ``[Lq, K]`` -> ``[nch, K, cw]`` float32 (query token ``i`` at chunk ``i // cw``, lane ``i % cw``),
    zero beyond ``Lq``."""
    lq, k = s.shape
    out = np.zeros((nch, k, cw), np.float32)
    for i in range(lq):
        for c in range(k):
            out[i // cw, c, i % cw] = s[i, c]
    return out


@_jit
def _half_tables(q_t, weights, nbits, h):  # pragma: no cover - compiled
    """``H[g, n, :]`` (into ``h``, ``[2 npos, 16, cw]``): what half-byte value ``n`` at half-byte ``g`` adds to
    each query token of ``q_t`` (``[dim, cw]``), summed over its dimensions in order."""
    cw = q_t.shape[1]
    half = 4 // nbits
    mask = (1 << nbits) - 1
    h[:] = 0.0
    for g in range(h.shape[0]):
        for n in range(16):
            row = h[g, n]
            for j in range(half):
                d = g * half + j
                w = weights[d, (n >> (j * nbits)) & mask]
                q = q_t[d]
                for i in range(cw):
                    row[i] += w * q[i]


@_jit
def _table(query_t, weights, nbits, t, h):  # pragma: no cover - compiled
    """``T[ch, p, v, :]``: the residual contribution of byte value ``v`` at packed position ``p`` to the query
    tokens of chunk ``ch``; ``query_t`` is ``[nch, dim, cw]`` (zero-padded query tokens, transposed),
    ``weights`` ``[dim, 2^b]``; written into ``t`` (``[nch, npos, 256, cw]``) from half-byte tables (``h``,
    ``[2 npos, 16, cw]``): ``T[p, v] = H[2p, v & 15] + H[2p+1, v >> 4]``, ``H`` the sum over the half-byte's
    dimensions in order."""
    nch, dim, cw = query_t.shape
    npos = dim // (8 // nbits)
    nv = cw // 8
    for ch in range(nch):
        _half_tables(query_t[ch], weights, nbits, h)
        h_a, t_a, row = h.ctypes.data, t[ch].ctypes.data, cw * 4
        for p in range(npos):
            for v in range(256):
                o_a = t_a + (p * 256 + v) * row
                lo_a, hi_a = h_a + (32 * p + (v & 15)) * row, h_a + (32 * p + 16 + (v >> 4)) * row
                if nv == 1:
                    _row_add(o_a, lo_a, hi_a, 1)
                elif nv == 2:
                    _row_add(o_a, lo_a, hi_a, 2)
                elif nv == 3:
                    _row_add(o_a, lo_a, hi_a, 3)
                elif nv == 4:
                    _row_add(o_a, lo_a, hi_a, 4)
                elif nv == 5:
                    _row_add(o_a, lo_a, hi_a, 5)
                elif nv == 6:
                    _row_add(o_a, lo_a, hi_a, 6)
                elif nv == 7:
                    _row_add(o_a, lo_a, hi_a, 7)
                else:
                    _row_add(o_a, lo_a, hi_a, 8)


@_jit
def _exact(codes, residuals, scales, offsets, docs, st, t, inv_table, lq):  # pragma: no cover - compiled
    """MaxSim of one query against ``docs`` straight from the packed codes; ``[n]`` float32."""
    n = docs.shape[0]
    npos = residuals.shape[1]
    nch, k, cw = st.shape
    nv = cw // 8
    out = np.zeros(n, np.float32)
    acc = np.empty(nch * cw, np.float32)
    best = np.empty(nch * cw, np.float32)
    t_a, r_a, s_a, o_a = t.ctypes.data, residuals.ctypes.data, st.ctypes.data, acc.ctypes.data
    t_step, s_step = npos * 256 * cw * 4, k * cw * 4
    for j in range(n):
        d = docs[j]
        lo, hi = offsets[d], offsets[d + 1]
        if hi == lo:
            continue
        best[:] = -np.inf
        for r in range(lo, hi):
            ra = r_a + r * npos
            sa = s_a + np.intp(codes[r]) * cw * 4
            for ch in range(nch):
                ta, ia, oa = t_a + ch * t_step, sa + ch * s_step, o_a + ch * cw * 4
                if nv == 1:
                    _token_sum(ta, ra, ia, oa, npos, 1)
                elif nv == 2:
                    _token_sum(ta, ra, ia, oa, npos, 2)
                elif nv == 3:
                    _token_sum(ta, ra, ia, oa, npos, 3)
                elif nv == 4:
                    _token_sum(ta, ra, ia, oa, npos, 4)
                elif nv == 5:
                    _token_sum(ta, ra, ia, oa, npos, 5)
                elif nv == 6:
                    _token_sum(ta, ra, ia, oa, npos, 6)
                elif nv == 7:
                    _token_sum(ta, ra, ia, oa, npos, 7)
                else:
                    _token_sum(ta, ra, ia, oa, npos, 8)
            f = inv_table[scales[r]]
            for i in range(nch * cw):
                x = acc[i] * f
                best[i] = x if x > best[i] else best[i]
        total = np.float32(0.0)
        for i in range(lq):
            total += best[i]
        out[j] = total
    return out


@_jit
def _interaction(cell_offsets, cells, docs, st, lq):  # pragma: no cover - compiled
    """Centroid interaction: per document, the sum over query tokens of the max over its distinct centroids
    of ``S^T[c, :]``; ``[n]`` float32, 0 without tokens."""
    n = docs.shape[0]
    nch, _, cw = st.shape
    out = np.zeros(n, np.float32)
    best = np.empty((nch, cw), np.float32)
    for j in range(n):
        d = docs[j]
        lo, hi = cell_offsets[d], cell_offsets[d + 1]
        if hi == lo:
            continue
        best[:] = -np.inf
        for e in range(lo, hi):
            c = cells[e]
            for ch in range(nch):
                for i in range(cw):
                    x = st[ch, c, i]
                    best[ch, i] = x if x > best[ch, i] else best[ch, i]
        total = np.float32(0.0)
        for i in range(lq):
            total += best[i // cw, i % cw]
        out[j] = total
    return out


# ----------------------------------------------------------------------------- wrappers
_SCRATCH = threading.local()


def _buffer(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A per-thread float32 work array of ``shape``, kept between queries (a fresh 2 MB table per query costs
    its page faults); overwritten by every use."""
    got = getattr(_SCRATCH, name, None)
    if got is None or got.shape != shape:
        got = np.empty(shape, np.float32)
        setattr(_SCRATCH, name, got)
    return got


def transposed(centroid_scores: np.ndarray) -> np.ndarray:
    """``S`` ``[Lq, K]`` -> ``S^T`` in chunks, ``[chunks, K, width]`` float32 (:func:`layout`), as the kernels
    read it."""
    s = np.ascontiguousarray(centroid_scores, dtype=np.float32)
    return _transpose_pad(s, *layout(s.shape[0]))


def centroid_interaction(index: Any, st: np.ndarray, lq: int, docs: np.ndarray) -> np.ndarray:
    """:meth:`PlaidIndex.centroid_interaction <attnsift.indexes.plaid_index.PlaidIndex.centroid_interaction>`
    from :func:`transposed` scores ``st``."""
    offs, cells = index.doc_cells()
    return _interaction(offs, cells, np.asarray(docs, dtype=np.int64), st, int(lq))


def exact_scores(index: Any, query_tokens: np.ndarray, st: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """:meth:`PlaidIndex.exact_scores <attnsift.indexes.plaid_index.PlaidIndex.exact_scores>` in float32 from
    :func:`transposed` scores ``st``; ``[n]`` float32, 0 for a document without tokens. The int16 variant:
    :func:`attnsift.indexes.plaid_kernel16.exact_scores`."""
    if not (index.residuals.flags.c_contiguous and index.codes.flags.c_contiguous):
        raise ValueError("the compiled plaid path reads C-contiguous codes and residuals; use impl='numpy'")
    q = np.asarray(query_tokens, dtype=np.float32)
    nch, _, cw = st.shape
    qt = np.zeros((index.dim, nch * cw), np.float32)
    qt[:, : q.shape[0]] = q.T
    npos = index.residuals.shape[1]
    t = _buffer("table", (nch, npos, 256, cw))
    _table(np.ascontiguousarray(qt.reshape(index.dim, nch, cw).transpose(1, 0, 2)), index.weights, index.nbits, t,
           _buffer("half_table", (2 * npos, 16, cw)))
    return _exact(index.codes, index.residuals, index.scales, index.offsets, np.asarray(docs, dtype=np.int64), st,
                  t, _inv_table(index), int(q.shape[0]))


def _inv_table(index: Any) -> np.ndarray:
    """The 256 values a stored scale byte stands for (as :meth:`PlaidIndex.inverse_norms` computes them)."""
    lo, hi = (float(x) for x in index.scale_range)
    return (lo + (hi - lo) / 255 * np.arange(256, dtype=np.float32)).astype(np.float32)
