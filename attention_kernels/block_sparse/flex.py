"""BlockRank attention through torch's FlexAttention with a BlockMask (a second fast path for speed
comparisons). Needs ``torch.nn.attention.flex_attention`` (torch >= 2.5). On CUDA the call is
``torch.compile``d (eager FlexAttention materialises the scores); on CPU it runs eagerly (tests only).
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

_COMPILED: dict[str, Any] = {}


def flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def blockrank_block_mask(block_offsets: Tensor, T: int, device: Any, block_size: int = 128) -> Any:
    """FlexAttention BlockMask of the BlockRank pattern for one sequence of T tokens."""
    from torch.nn.attention.flex_attention import create_block_mask

    off = block_offsets.to(device=device, dtype=torch.int64)
    B = off.numel() - 1
    bid = torch.searchsorted(off, torch.arange(T, device=device), right=True) - 1  # [T]

    def mask_mod(b, h, q_idx, kv_idx):  # noqa: ANN001 - FlexAttention's signature
        qb = bid[q_idx]
        kb = bid[kv_idx]
        return (kv_idx <= q_idx) & ((kb == 0) | (kb == qb) | (qb == B - 1))

    return create_block_mask(mask_mod, None, None, T, T, device=device, BLOCK_SIZE=block_size)


def block_sparse_flex(q: Tensor, k: Tensor, v: Tensor, block_offsets: Tensor, scale: float,
                      block_mask: Any = None) -> tuple[Tensor, Tensor]:
    """FlexAttention forward. Returns (out [Hq, T, D] q.dtype, lse [Hq, T] float32, natural log)."""
    from torch.nn.attention.flex_attention import flex_attention

    Hq, T, D = q.shape
    if block_mask is None:
        block_mask = blockrank_block_mask(block_offsets, T, q.device)
    fn = flex_attention
    if q.device.type == "cuda":
        if "flex" not in _COMPILED:
            _COMPILED["flex"] = torch.compile(flex_attention, dynamic=False)
        fn = _COMPILED["flex"]
    gqa = q.shape[0] != k.shape[0]
    with warnings.catch_warnings():
        # eager CPU use (tests) warns that it is unfused; that is known and intended there
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        try:
            from torch.nn.attention.flex_attention import AuxRequest
        except ImportError:  # torch < 2.9: the older keyword
            out, lse = fn(q[None], k[None], v[None], block_mask=block_mask, scale=scale,
                          enable_gqa=gqa, return_lse=True)
        else:
            out, aux = fn(q[None], k[None], v[None], block_mask=block_mask, scale=scale,
                          enable_gqa=gqa, return_aux=AuxRequest(lse=True))
            lse = aux.lse
    return out[0].to(q.dtype), lse[0].to(torch.float32)
