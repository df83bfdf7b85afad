"""Triton MaxSim kernel: grid (documents, query blocks).

Each program loads ``BLOCK_B`` queries' tokens as one [BLOCK_B * BLOCK_Q, D] tile, streams its
document's tokens in ``BLOCK_T`` tiles keeping a running max per query token, then sums the masked
maxima per query. Scores are written directly; no [B, Lq, T] similarity is stored.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from attnsift.attention_kernels._common import launchable, next_pow2


@triton.jit
def _maxsim_fwd_kernel(
    Q, QMASK, DOCS, OFFSETS, OUT,
    n_queries, n_qtok,
    stride_qb, stride_ql, stride_qd,
    stride_mb, stride_ml,
    stride_tt, stride_td,
    stride_ob, stride_on,
    DIM: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_b = tl.program_id(1)
    offs_r = tl.arange(0, BLOCK_B * BLOCK_Q)  # [BR] flattened (query in block, query token)
    qb = pid_b * BLOCK_B + offs_r // BLOCK_Q
    ql = offs_r % BLOCK_Q
    r_ok = (qb < n_queries) & (ql < n_qtok)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < DIM
    q = tl.load(Q + qb[:, None] * stride_qb + ql[:, None] * stride_ql + offs_d[None, :] * stride_qd,
                mask=r_ok[:, None] & d_ok[None, :], other=0.0)  # [BR, BD]
    w = tl.load(QMASK + qb * stride_mb + ql * stride_ml, mask=r_ok, other=0.0)  # [BR] 1 real, 0 padding
    t_lo = tl.load(OFFSETS + pid_n)
    t_hi = tl.load(OFFSETS + pid_n + 1)
    best = tl.full([BLOCK_B * BLOCK_Q], float("-inf"), tl.float32)
    for start in range(t_lo, t_hi, BLOCK_T):
        offs_t = start + tl.arange(0, BLOCK_T)
        t_ok = offs_t < t_hi
        d = tl.load(DOCS + offs_t[:, None] * stride_tt + offs_d[None, :] * stride_td,
                    mask=t_ok[:, None] & d_ok[None, :], other=0.0)  # [BT, BD]
        s = tl.dot(q, tl.trans(d), input_precision=INPUT_PRECISION)  # [BR, BT]
        s = tl.where(t_ok[None, :], s, float("-inf"))
        best = tl.maximum(best, tl.max(s, 1))
    contrib = tl.where(w > 0, best * w, 0.0)  # padding rows (w = 0) add nothing
    per_query = tl.sum(tl.reshape(contrib, [BLOCK_B, BLOCK_Q]), 1)  # [BLOCK_B]
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    tl.store(OUT + offs_b * stride_ob + pid_n * stride_on, per_query, mask=offs_b < n_queries)


def maxsim_triton(queries: Tensor, doc_tokens: Tensor, doc_offsets: Tensor, query_mask: Tensor | None,
                  block_t: int = 64) -> Tensor:
    """Launch the kernel; inputs validated by the API. Returns [B, N] float32."""
    B, Lq, D = queries.shape
    N = doc_offsets.numel() - 1
    dev = queries.device
    offsets = doc_offsets.to(device=dev, dtype=torch.int32)
    qmask = (torch.ones((B, Lq), device=dev) if query_mask is None else query_mask).to(device=dev, dtype=torch.float32)
    block_q = next_pow2(Lq, minimum=1)
    # rows per program >= 16 for tl.dot and <= 128 to bound registers
    block_b = max(1, min(next_pow2(B, minimum=1), 128 // block_q)) if block_q < 128 else 1
    while block_b * block_q < 16:
        block_b *= 2
    out = torch.empty((B, N), dtype=torch.float32, device=dev)
    precision = "ieee" if queries.dtype == torch.float32 else "tf32"
    launchable(_maxsim_fwd_kernel, dev)[(N, triton.cdiv(B, block_b))](
        queries, qmask, doc_tokens, offsets, out,
        B, Lq,
        queries.stride(0), queries.stride(1), queries.stride(2),
        qmask.stride(0), qmask.stride(1),
        doc_tokens.stride(0), doc_tokens.stride(1),
        out.stride(0), out.stride(1),
        DIM=D, BLOCK_B=block_b, BLOCK_Q=block_q, BLOCK_T=block_t, BLOCK_D=next_pow2(D),
        INPUT_PRECISION=precision,
    )
    return out
