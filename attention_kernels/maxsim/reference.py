"""Plain-PyTorch specification of MaxSim (late interaction) over packed documents.

Documents are processed in chunks of at most ``chunk_tokens`` packed tokens, so the similarity
block alive at once is [B, Lq, chunk_tokens], never [B, Lq, T].
"""
from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_CHUNK_TOKENS = 8192


def maxsim_reference(queries: Tensor, doc_tokens: Tensor, doc_offsets: Tensor, query_mask: Tensor | None,
                     chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> Tensor:
    """Reference MaxSim; inputs validated by the API.

    Parameters
    ----------
    queries : [B, Lq, D]; doc_tokens : [T, D]; doc_offsets : [N+1] int64 (CPU); query_mask : [B, Lq] bool or None.

    Returns
    -------
    [B, N] float32 scores.
    """
    B, Lq, D = queries.shape
    dev = queries.device
    off = [int(x) for x in doc_offsets.tolist()]
    N = len(off) - 1
    qf = queries.to(torch.float32)
    w = torch.ones((B, Lq), dtype=torch.float32, device=dev) if query_mask is None else query_mask.to(dev, torch.float32)
    scores = torch.empty((B, N), dtype=torch.float32, device=dev)
    d0 = 0
    while d0 < N:
        # grow the chunk by whole documents up to chunk_tokens (at least one document)
        d1 = d0 + 1
        while d1 < N and off[d1 + 1] - off[d0] <= chunk_tokens:
            d1 += 1
        t0, t1 = off[d0], off[d1]
        sim = torch.einsum("bqd,td->bqt", qf, doc_tokens[t0:t1].to(torch.float32))  # [B, Lq, C]
        lengths = torch.tensor(off[d0 + 1:d1 + 1], device=dev) - torch.tensor(off[d0:d1], device=dev)
        doc_of_tok = torch.repeat_interleave(torch.arange(d1 - d0, device=dev), lengths)  # [C]
        best = torch.full((B, Lq, d1 - d0), float("-inf"), dtype=torch.float32, device=dev)
        best.scatter_reduce_(2, doc_of_tok.expand(B, Lq, -1), sim, reduce="amax", include_self=True)
        # padded query tokens contribute nothing (multiply by 0 is safe: every max is finite)
        scores[:, d0:d1] = (best * w[..., None]).sum(dim=1)
        d0 = d1
    return scores
