"""Plain-PyTorch specification of the segment attention mass (runs on any device).

Streams over the keys in chunks, so memory stays at O(R x Hq x chunk) besides the outputs:
pass 1 keeps a running max and sum (the log-sum-exp), pass 2 recomputes the logits and turns them
into mass per segment (and per token when asked).
"""
from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_CHUNK = 4096


def _logits(qg: Tensor, k: Tensor, lo: int, hi: int, scale: float, softcap: float | None = None) -> Tensor:
    """Scaled (and optionally soft-capped) logits of every query row/head against keys [lo, hi).

    qg : [R, Hk, G, D] float32; k : [N, Hk, D]. Returns [R, Hk*G, hi-lo] float32.
    """
    kc = k[lo:hi].to(torch.float32)  # [C, Hk, D]
    s = torch.einsum("rhgd,chd->rhgc", qg, kc) * scale  # [R, Hk, G, C]
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    return s.reshape(qg.shape[0], qg.shape[1] * qg.shape[2], hi - lo)


def _allowed(lo: int, hi: int, q_positions: Tensor | None, in_seg: Tensor | None, device,
             key_start: Tensor | None = None) -> Tensor | None:
    """Bool [R, 1, C] (or [1, 1, C]) mask of allowed keys in [lo, hi), None when all are allowed."""
    mask = None
    j = torch.arange(lo, hi, device=device)
    if q_positions is not None:
        mask = (j[None, :] <= q_positions[:, None])[:, None, :]  # [R, 1, C]
    if key_start is not None:
        m1 = (j[None, :] >= key_start[:, None])[:, None, :]  # [R, 1, C]
        mask = m1 if mask is None else (mask & m1)
    if in_seg is not None:
        m2 = in_seg[lo:hi][None, None, :]  # [1, 1, C]
        mask = m2 if mask is None else (mask & m2)
    return mask


def segment_mass_reference(q: Tensor, k: Tensor, segment_offsets: Tensor, scale: float,
                           q_positions: Tensor | None, softmax_over: str, return_token_mass: bool,
                           chunk: int = DEFAULT_CHUNK, key_start: Tensor | None = None,
                           softcap: float | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Reference segment mass; inputs already validated by the API.

    Parameters
    ----------
    q : [R, Hq, D]; k : [N, Hk, D]; segment_offsets : [S+1] int64 (CPU)
    q_positions, key_start : [R] int64 on q's device or None (last / first key each row sees).
    softcap : logit soft-capping or None.

    Returns
    -------
    (lse [R, Hq], segment_mass [R, Hq, S], token_mass [R, Hq, N] or None), all float32.
    """
    R, Hq, D = q.shape
    N, Hk, _ = k.shape
    G = Hq // Hk
    S = segment_offsets.numel() - 1
    dev = q.device
    qg = q.to(torch.float32).reshape(R, Hk, G, D)  # heads h = kvh * G + g (GQA grouping)
    off = segment_offsets.to(dev)
    seg_lo, seg_hi = int(segment_offsets[0]), int(segment_offsets[-1])
    in_seg = None
    if softmax_over == "segments":
        in_seg = torch.zeros(N, dtype=torch.bool, device=dev)
        in_seg[seg_lo:seg_hi] = True
        lo_all, hi_all = seg_lo, seg_hi  # keys outside the segments never count
    else:
        lo_all, hi_all = 0, N

    # pass 1: running max and sum over the allowed keys
    m = torch.full((R, Hq), float("-inf"), dtype=torch.float32, device=dev)
    l = torch.zeros((R, Hq), dtype=torch.float32, device=dev)
    # When pass 2 would cover the very same single chunk, its (masked) logits are kept from pass 1: the
    # same values, computed once (ICR's span rows against a prompt of up to ``chunk`` keys).
    reuse = return_token_mass and lo_all == 0 and hi_all == N and N <= chunk
    kept = None
    for lo in range(lo_all, hi_all, chunk):
        hi = min(lo + chunk, hi_all)
        s = _logits(qg, k, lo, hi, scale, softcap)  # [R, Hq, C]
        mask = _allowed(lo, hi, q_positions, in_seg, dev, key_start)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        if reuse:
            kept = s
        m_new = torch.maximum(m, s.amax(dim=-1))
        # a row with nothing allowed so far keeps m = -inf; use 0 as the shift to avoid inf - inf
        shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        l = l * torch.exp(m - shift) + torch.exp(s - shift[..., None]).sum(dim=-1)
        m = m_new
    lse = torch.where(l > 0, m + torch.log(l), torch.full_like(m, float("-inf")))

    # pass 2: probabilities, summed per segment
    seg_mass = torch.zeros((R, Hq, S), dtype=torch.float32, device=dev)
    token_mass = torch.zeros((R, Hq, N), dtype=torch.float32, device=dev) if return_token_mass else None
    seg_id = torch.searchsorted(off, torch.arange(N, device=dev), right=True) - 1  # [N], -1/S outside
    shift = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))[..., None]  # [R, Hq, 1]
    lo_pass2, hi_pass2 = (0, N) if return_token_mass else (seg_lo, seg_hi)
    for lo in range(lo_pass2, hi_pass2, chunk):
        hi = min(lo + chunk, hi_pass2)
        if softmax_over == "segments" and (hi <= seg_lo or lo >= seg_hi):
            continue  # no allowed key here; token mass stays 0
        if kept is not None:
            p = torch.exp(kept - shift)  # masked logits are -inf: exp gives 0 there (finite shift)
            mask = None
        else:
            s = _logits(qg, k, lo, hi, scale, softcap)
            mask = _allowed(lo, hi, q_positions, in_seg, dev, key_start)
            p = torch.exp(s - shift)  # [R, Hq, C]
        if mask is not None:
            p = p.masked_fill(~mask, 0.0)
        if token_mass is not None:
            token_mass[:, :, lo:hi] = p
        a, b = max(lo, seg_lo), min(hi, seg_hi)
        if a < b:
            idx = seg_id[a:b]  # [C'] in [0, S)
            seg_mass.index_add_(2, idx, p[:, :, a - lo:b - lo])
    return lse, seg_mass, token_mass
