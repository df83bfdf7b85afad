"""Plain-PyTorch specification of BlockRank's block-sparse causal attention.

Blockwise, never a T x T mask: block 0 attends causally to itself; each document block attends to
block 0 plus causally to itself; the last block attends causally to everything. The work is one
small attention per document block (against |block 0| + |block| keys) plus the last block against
all keys, so it grows linearly with the number of documents.
"""
from __future__ import annotations

import torch
from torch import Tensor

# at most this many float32 logits alive at once (64 MiB); the query rows of a block are chunked to fit
MAX_LOGITS = 1 << 24


def _key_index(block_offsets: list[int], b: int) -> list[tuple[int, int]]:
    """Key ranges visible to block b (its own range is causal; the others are fully visible)."""
    B = len(block_offsets) - 1
    lo, hi = block_offsets[b], block_offsets[b + 1]
    if b == 0 or b == B - 1:
        return [(0, hi)]
    return [(0, block_offsets[1]), (lo, hi)]


def block_sparse_reference(q: Tensor, k: Tensor, v: Tensor, block_offsets: Tensor, scale: float,
                           max_logits: int = MAX_LOGITS) -> tuple[Tensor, Tensor]:
    """Reference forward; inputs validated by the API.

    Parameters
    ----------
    q : [Hq, T, D]; k, v : [Hk, T, D]; block_offsets : [B+1] int64 (CPU) covering [0, T).

    Returns
    -------
    (out [Hq, T, D] in q's dtype, lse [Hq, T] float32 natural log)
    """
    Hq, T, D = q.shape
    Hk = k.shape[0]
    G = Hq // Hk
    dev = q.device
    off = [int(x) for x in block_offsets.tolist()]
    B = len(off) - 1
    qf = q.to(torch.float32).reshape(Hk, G, T, D)  # head h = kvh * G + g
    out = torch.empty((Hk, G, T, D), dtype=torch.float32, device=dev)
    lse = torch.empty((Hk, G, T), dtype=torch.float32, device=dev)
    for b in range(B):
        ranges = _key_index(off, b)
        key_pos = torch.cat([torch.arange(a, c, device=dev) for a, c in ranges])  # [Nk] absolute positions
        kk = torch.cat([k[:, a:c] for a, c in ranges], dim=1).to(torch.float32)  # [Hk, Nk, D]
        vv = torch.cat([v[:, a:c] for a, c in ranges], dim=1).to(torch.float32)
        lo, hi = off[b], off[b + 1]
        rows = max(1, max_logits // max(1, Hq * key_pos.numel()))
        for r0 in range(lo, hi, rows):
            r1 = min(r0 + rows, hi)
            s = torch.einsum("hgtd,hnd->hgtn", qf[:, :, r0:r1], kk) * scale  # [Hk, G, rows, Nk]
            qpos = torch.arange(r0, r1, device=dev)
            s = s.masked_fill(key_pos[None, :] > qpos[:, None], float("-inf"))  # causal
            row_lse = torch.logsumexp(s, dim=-1)  # [Hk, G, rows]; finite: key 0 or the diagonal is visible
            p = torch.exp(s - row_lse[..., None])
            out[:, :, r0:r1] = torch.einsum("hgtn,hnd->hgtd", p, vv)
            lse[:, :, r0:r1] = row_lse
    return out.reshape(Hq, T, D).to(q.dtype), lse.reshape(Hq, T)


def dense_mask(block_offsets: Tensor, T: int) -> Tensor:
    """The BlockRank mask as a dense bool [T, T] (True = query row may attend key column).

    For tests and oracles only: it is quadratic in T.
    """
    off = block_offsets.to("cpu", torch.int64)
    B = off.numel() - 1
    bid = torch.searchsorted(off, torch.arange(T), right=True) - 1  # [T] block of each token
    i = torch.arange(T)
    causal = i[None, :] <= i[:, None]
    same = bid[None, :] == bid[:, None]
    sees = (bid[None, :] == 0) | same | (bid[:, None] == B - 1)
    return causal & sees


def dense_attention(q: Tensor, k: Tensor, v: Tensor, block_offsets: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Dense masked attention in float32 (quadratic; a test oracle). Same outputs as the reference."""
    Hq, T, D = q.shape
    G = Hq // k.shape[0]
    mask = dense_mask(block_offsets, T).to(q.device)
    kf = k.to(torch.float32).repeat_interleave(G, dim=0)
    vf = v.to(torch.float32).repeat_interleave(G, dim=0)
    s = torch.einsum("htd,hnd->htn", q.to(torch.float32), kf) * scale
    s = s.masked_fill(~mask[None], float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    out = torch.einsum("htn,hnd->htd", torch.exp(s - lse[..., None]), vf)
    return out.to(q.dtype), lse
