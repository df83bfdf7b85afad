"""Triton flash-attention forward for BlockRank's block-sparse mask.

The host builds a tile schedule: every query tile lies inside one block and carries at most two key
ranges (document tile: all of block 0, then its own block up to the tile's last row; block 0 and the
last block: keys [0, tile end)). Masked tiles are never visited, so the work is linear in the number
of documents. Tiles of the last block (the longest) are scheduled first for load balance.
Grid: (tiles, query heads); GQA maps query head h to key head h // (Hq / Hk).
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
def _block_sparse_fwd_kernel(
    Q, K, V, O, LSE, TILES,
    group, qk_scale,
    stride_qh, stride_qt, stride_qd,
    stride_kh, stride_kt, stride_kd,
    stride_vh, stride_vt, stride_vd,
    stride_oh, stride_ot, stride_od,
    stride_lh, stride_lt,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_h = tl.program_id(1)
    kvh = pid_h // group
    tile = TILES + pid_t * 6  # [q_lo, q_hi, k0_lo, k0_hi, k1_lo, k1_hi]
    q_lo = tl.load(tile)
    q_hi = tl.load(tile + 1)
    offs_m = q_lo + tl.arange(0, BLOCK_M)  # [BM] absolute query positions
    m_ok = offs_m < q_hi
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    q = tl.load(Q + pid_h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :] * stride_qd,
                mask=m_ok[:, None] & d_ok[None, :], other=0.0)  # [BM, BD]
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for rr in tl.static_range(2):
        k_lo = tl.load(tile + 2 + 2 * rr)
        k_hi = tl.load(tile + 3 + 2 * rr)
        for start in range(k_lo, k_hi, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)  # [BN]
            n_ok = offs_n < k_hi
            k = tl.load(K + kvh * stride_kh + offs_n[:, None] * stride_kt + offs_d[None, :] * stride_kd,
                        mask=n_ok[:, None] & d_ok[None, :], other=0.0)  # [BN, BD]
            s = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION) * qk_scale  # [BM, BN] base 2
            ok = n_ok[None, :] & (offs_n[None, :] <= offs_m[:, None]) & m_ok[:, None]
            s = tl.where(ok, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # padding rows see nothing
            alpha = tl.exp2(m_i - shift)
            p = tl.exp2(s - shift[:, None])  # [BM, BN]
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(V + kvh * stride_vh + offs_n[:, None] * stride_vt + offs_d[None, :] * stride_vd,
                        mask=n_ok[:, None] & d_ok[None, :], other=0.0)  # [BN, BD]
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=INPUT_PRECISION)
            m_i = m_new
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    out = acc / l_safe[:, None]
    tl.store(O + pid_h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :] * stride_od,
             out.to(O.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])
    tl.store(LSE + pid_h * stride_lh + offs_m * stride_lt, (m_i + tl.log2(l_safe)) * LN2, mask=m_ok)


def build_tiles(block_offsets: list[int], block_m: int) -> list[tuple[int, int, int, int, int, int]]:
    """Query tiles with their (at most two) key ranges, last block first."""
    B = len(block_offsets) - 1
    tiles: list[tuple[int, int, int, int, int, int]] = []
    order = [B - 1] + list(range(B - 1))
    for b in order:
        lo, hi = block_offsets[b], block_offsets[b + 1]
        for t0 in range(lo, hi, block_m):
            t1 = min(t0 + block_m, hi)
            if b == 0 or b == B - 1:
                tiles.append((t0, t1, 0, t1, 0, 0))
            else:
                tiles.append((t0, t1, 0, block_offsets[1], lo, t1))
    return tiles


def block_sparse_triton(q: Tensor, k: Tensor, v: Tensor, block_offsets: Tensor, scale: float,
                        block_m: int = 64, block_n: int = 64, num_warps: int = 4,
                        num_stages: int = 2) -> tuple[Tensor, Tensor]:
    """Launch the kernel; inputs validated by the API. Returns (out [Hq, T, D] q.dtype, lse [Hq, T] f32)."""
    Hq, T, D = q.shape
    Hk = k.shape[0]
    dev = q.device
    off = [int(x) for x in block_offsets.tolist()]
    tiles = build_tiles(off, block_m)
    tiles_t = torch.tensor(tiles, dtype=torch.int32, device=dev)  # [n_tiles, 6]
    out = torch.empty((Hq, T, D), dtype=q.dtype, device=dev)
    lse = torch.empty((Hq, T), dtype=torch.float32, device=dev)
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    kwargs = {} if dev.type != "cuda" else {"num_warps": num_warps, "num_stages": num_stages}
    launchable(_block_sparse_fwd_kernel, dev)[(len(tiles), Hq)](
        q, k, v, out, lse, tiles_t,
        Hq // Hk, float(scale) * LOG2E,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        lse.stride(0), lse.stride(1),
        HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=next_pow2(D),
        INPUT_PRECISION=precision, **kwargs,
    )
    return out, lse
