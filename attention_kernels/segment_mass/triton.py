"""Triton kernels for the segment attention mass.

Two launches, both over a list of key ranges so the work splits evenly and nothing needs atomics
(results are bit-identical run to run):

1. ``_segment_mass_lse_kernel``: grid (row blocks, kv heads, key ranges). Each program keeps a
   running max / sum (base 2) over its key range for ``BLOCK_M`` (query row, head-in-group) pairs and
   writes one partial; the partials are merged with a tiny logsumexp on the host side.
2. ``_segment_mass_fwd_kernel``: grid (row blocks, kv heads, ranges). A range is one segment (or a
   stretch of keys outside the segments when per-token mass is requested); the program recomputes
   the logits, turns them into probabilities with the final lse, sums them for its segment and
   optionally stores them per token. The per-segment output never needs [R, Hq, N] memory.

GQA: the rows of one program are the query rows r times the G = Hq / Hk query heads that share kv
head ``pid_kvh``, flattened as m = r * G + g, so every key tile is loaded once for all of them.
"""
from __future__ import annotations


import torch
import triton
import triton.language as tl
from torch import Tensor

from attnsift.attention_kernels._common import launchable, next_pow2

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _scaled_logits(dot, qk_scale, sm_scale, softcap, HAS_SOFTCAP: tl.constexpr):
    """Base-2 logits from raw q.k products; with soft-capping, ``softcap * tanh(s / softcap)`` first
    (tanh written as 2 sigmoid(2x) - 1)."""
    if HAS_SOFTCAP:
        x = dot * sm_scale / softcap
        return softcap * (2.0 * tl.sigmoid(2.0 * x) - 1.0) * 1.4426950408889634
    return dot * qk_scale


@triton.jit
def _segment_mass_lse_kernel(
    Q, K, QPOS, KSTART, RANGE_LO, RANGE_HI, M_OUT, L_OUT,
    n_rows, group, qk_scale, sm_scale, softcap,
    stride_qr, stride_qh, stride_qd,
    stride_kn, stride_kh, stride_kd,
    stride_pp, stride_pr, stride_ph,
    HEAD_DIM: tl.constexpr, HAS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_kvh = tl.program_id(1)
    pid_rg = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM] flattened (row, head-in-group)
    valid_m = offs_m < n_rows * group
    row = offs_m // group
    head = pid_kvh * group + offs_m % group
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    q = tl.load(Q + row[:, None] * stride_qr + head[:, None] * stride_qh + offs_d[None, :] * stride_qd,
                mask=valid_m[:, None] & d_ok[None, :], other=0.0)  # [BM, BD]
    if HAS_CAUSAL:
        qpos = tl.load(QPOS + row, mask=valid_m, other=-1)  # [BM]
    if HAS_WINDOW:
        kstart = tl.load(KSTART + row, mask=valid_m, other=0)  # [BM] first key each row sees
    lo = tl.load(RANGE_LO + pid_rg)
    hi = tl.load(RANGE_HI + pid_rg)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)  # [BN]
        n_ok = offs_n < hi
        k = tl.load(K + offs_n[:, None] * stride_kn + pid_kvh * stride_kh + offs_d[None, :] * stride_kd,
                    mask=n_ok[:, None] & d_ok[None, :], other=0.0)  # [BN, BD]
        s = _scaled_logits(tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION), qk_scale, sm_scale, softcap,
                           HAS_SOFTCAP)  # [BM, BN] base-2 logits
        ok = n_ok[None, :] & valid_m[:, None]
        if HAS_CAUSAL:
            ok = ok & (offs_n[None, :] <= qpos[:, None])
        if HAS_WINDOW:
            ok = ok & (offs_n[None, :] >= kstart[:, None])
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing allowed yet
        l_i = l_i * tl.exp2(m_i - shift) + tl.sum(tl.exp2(s - shift[:, None]), 1)
        m_i = m_new
    out = pid_rg * stride_pp + row * stride_pr + head * stride_ph
    tl.store(M_OUT + out, m_i, mask=valid_m)
    tl.store(L_OUT + out, l_i, mask=valid_m)


@triton.jit
def _segment_mass_fwd_kernel(
    Q, K, QPOS, KSTART, LSE2, RANGE_LO, RANGE_HI, RANGE_SEG, SEG_OUT, TOK_OUT,
    n_rows, group, qk_scale, sm_scale, softcap,
    stride_qr, stride_qh, stride_qd,
    stride_kn, stride_kh, stride_kd,
    stride_lr, stride_lh,
    stride_sr, stride_sh, stride_ss,
    stride_tr, stride_th, stride_tn,
    HEAD_DIM: tl.constexpr, HAS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    WRITE_TOKENS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_kvh = tl.program_id(1)
    pid_rg = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    valid_m = offs_m < n_rows * group
    row = offs_m // group
    head = pid_kvh * group + offs_m % group
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    q = tl.load(Q + row[:, None] * stride_qr + head[:, None] * stride_qh + offs_d[None, :] * stride_qd,
                mask=valid_m[:, None] & d_ok[None, :], other=0.0)  # [BM, BD]
    lse2 = tl.load(LSE2 + row * stride_lr + head * stride_lh, mask=valid_m, other=0.0)  # [BM] base 2
    if HAS_CAUSAL:
        qpos = tl.load(QPOS + row, mask=valid_m, other=-1)
    if HAS_WINDOW:
        kstart = tl.load(KSTART + row, mask=valid_m, other=0)
    lo = tl.load(RANGE_LO + pid_rg)
    hi = tl.load(RANGE_HI + pid_rg)
    seg = tl.load(RANGE_SEG + pid_rg)  # segment index, -1 for keys outside every segment
    acc = tl.zeros([BLOCK_M], tl.float32)
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_ok = offs_n < hi
        k = tl.load(K + offs_n[:, None] * stride_kn + pid_kvh * stride_kh + offs_d[None, :] * stride_kd,
                    mask=n_ok[:, None] & d_ok[None, :], other=0.0)  # [BN, BD]
        s = _scaled_logits(tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION), qk_scale, sm_scale, softcap,
                           HAS_SOFTCAP)  # [BM, BN]
        ok = n_ok[None, :] & valid_m[:, None]
        if HAS_CAUSAL:
            ok = ok & (offs_n[None, :] <= qpos[:, None])
        if HAS_WINDOW:
            ok = ok & (offs_n[None, :] >= kstart[:, None])
        p = tl.where(ok, tl.exp2(s - lse2[:, None]), 0.0)  # [BM, BN]
        acc += tl.sum(p, 1)
        if WRITE_TOKENS:
            tl.store(TOK_OUT + row[:, None] * stride_tr + head[:, None] * stride_th + offs_n[None, :] * stride_tn,
                     p, mask=valid_m[:, None] & n_ok[None, :])
    seg_v = tl.zeros([BLOCK_M], tl.int32) + seg  # [BM] (a vector mask; scalar-vector masks trip the interpreter)
    tl.store(SEG_OUT + row * stride_sr + head * stride_sh + seg_v * stride_ss, acc, mask=valid_m & (seg_v >= 0))


def _split(lo: int, hi: int, chunk: int) -> list[tuple[int, int]]:
    return [(a, min(a + chunk, hi)) for a in range(lo, hi, chunk)]


def segment_mass_triton(q: Tensor, k: Tensor, segment_offsets: Tensor, scale: float,
                        q_positions: Tensor | None, softmax_over: str, return_token_mass: bool,
                        range_chunk: int = 1024, block_n: int = 64, key_start: Tensor | None = None,
                        softcap: float | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Launch the kernels; inputs validated by the API. Shapes as in ``segment_mass``.

    Returns (lse [R, Hq], segment_mass [R, Hq, S], token_mass [R, Hq, N] or None), float32.
    """
    R, Hq, D = q.shape
    N, Hk, _ = k.shape
    G = Hq // Hk
    S = segment_offsets.numel() - 1
    dev = q.device
    off = [int(x) for x in segment_offsets.tolist()]
    # keys past the last query position are masked for every row: never visit them
    key_end = N
    if q_positions is not None:
        key_end = max(0, min(N, int(q_positions.max()) + 1))

    def clip(rs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        return [(a, min(b, key_end), s) for a, b, s in rs if a < min(b, key_end)]

    if softmax_over == "segments":
        lse_ranges = clip([(off[s], off[s + 1], s) for s in range(S)])
    else:
        lse_ranges = clip([(a, b, -1) for a, b in _split(0, N, range_chunk)])
    fwd_ranges = [(off[s], off[s + 1], s) for s in range(S)]
    if return_token_mass and softmax_over == "all":
        fwd_ranges += [(a, b, -1) for a, b in _split(0, off[0], range_chunk) + _split(off[-1], N, range_chunk)]
    fwd_ranges = clip(fwd_ranges)

    block_m = min(64, next_pow2(R * G))
    block_d = next_pow2(D)
    n_mblocks = triton.cdiv(R * G, block_m)
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    qk_scale = float(scale) * LOG2E
    qpos = q_positions if q_positions is not None else torch.zeros(1, dtype=torch.int64, device=dev)
    has_causal = q_positions is not None
    kstart = key_start if key_start is not None else qpos
    flags = dict(HAS_CAUSAL=has_causal, HAS_WINDOW=key_start is not None, HAS_SOFTCAP=softcap is not None)
    cap = float(softcap) if softcap is not None else 1.0

    seg_mass = torch.zeros((R, Hq, S), dtype=torch.float32, device=dev)
    token_mass = torch.zeros((R, Hq, N), dtype=torch.float32, device=dev) if return_token_mass else None
    if not lse_ranges:  # nothing allowed for any row (e.g. causal cut before the first segment)
        return torch.full((R, Hq), float("-inf"), device=dev), seg_mass, token_mass

    P = len(lse_ranges)
    rlo = torch.tensor([a for a, _, _ in lse_ranges], dtype=torch.int32, device=dev)
    rhi = torch.tensor([b for _, b, _ in lse_ranges], dtype=torch.int32, device=dev)
    m_part = torch.empty((P, R, Hq), dtype=torch.float32, device=dev)
    l_part = torch.empty((P, R, Hq), dtype=torch.float32, device=dev)
    launchable(_segment_mass_lse_kernel, dev)[(n_mblocks, Hk, P)](
        q, k, qpos, kstart, rlo, rhi, m_part, l_part,
        R, G, qk_scale, float(scale), cap,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        m_part.stride(0), m_part.stride(1), m_part.stride(2),
        HEAD_DIM=D, **flags,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, INPUT_PRECISION=precision,
    )
    # merge the partials (base 2): lse2 = M + log2(sum_p l_p * 2^(m_p - M))
    m_max = m_part.amax(dim=0)  # [R, Hq]
    shift = torch.where(torch.isfinite(m_max), m_max, torch.zeros_like(m_max))
    total = (l_part * torch.exp2(m_part - shift)).sum(dim=0)
    lse2 = torch.where(total > 0, shift + torch.log2(total), torch.full_like(shift, float("-inf")))
    lse2 = lse2.contiguous()

    if fwd_ranges:
        flo = torch.tensor([a for a, _, _ in fwd_ranges], dtype=torch.int32, device=dev)
        fhi = torch.tensor([b for _, b, _ in fwd_ranges], dtype=torch.int32, device=dev)
        fseg = torch.tensor([s for _, _, s in fwd_ranges], dtype=torch.int32, device=dev)
        tok = token_mass if token_mass is not None else seg_mass  # dummy pointer when not written
        launchable(_segment_mass_fwd_kernel, dev)[(n_mblocks, Hk, len(fwd_ranges))](
            q, k, qpos, kstart, lse2, flo, fhi, fseg, seg_mass, tok,
            R, G, qk_scale, float(scale), cap,
            q.stride(0), q.stride(1), q.stride(2),
            k.stride(0), k.stride(1), k.stride(2),
            lse2.stride(0), lse2.stride(1),
            seg_mass.stride(0), seg_mass.stride(1), seg_mass.stride(2),
            tok.stride(0), tok.stride(1), tok.stride(2),
            HEAD_DIM=D, **flags, WRITE_TOKENS=token_mass is not None,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, INPUT_PRECISION=precision,
        )
    return lse2 * LN2, seg_mass, token_mass


__all__ = ["segment_mass_triton"]
