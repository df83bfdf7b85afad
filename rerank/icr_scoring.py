"""ICR's document-score arithmetic on attention masses (METHODS.md section 1); no model involved.

With ``a_q(t)`` and ``a_NA(t)`` the per-token span mass of the real and of the content-free query
(summed over the selected layers and heads, mean over span rows)::

    none      : sum over the document's tokens of a_q(t)
    na        : sum of c(t) = a_q(t) - a_NA(t)
    masked_na : sum of c(t) over tokens with c(t) > mean(c) - 2 std(c) (per document)
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def segment_sums(mass: Any, spans: Sequence[tuple[int, int]]) -> Any:
    """(L, H, T) token mass -> (L, H, N) document mass over the token ``spans``."""
    import torch

    return torch.stack([mass[:, :, s:e].sum(dim=-1) for s, e in spans], dim=-1)


def masked_segment_sums(c: Any, spans: Sequence[tuple[int, int]]) -> Any:
    """(L, H, T) calibrated token mass -> (L, H, N): per head and document, the sum over tokens with
    c > mean - 2 std (the ``masked_na`` rule, applied to each head separately), float32."""
    import torch

    out = []
    for s, e in spans:
        seg = c[:, :, s:e].double()
        if e - s > 1:
            keep = seg > (seg.mean(dim=-1, keepdim=True) - 2 * seg.std(dim=-1, keepdim=True))
            out.append((seg * keep).sum(dim=-1))
        else:
            out.append(seg.sum(dim=-1))
    return torch.stack(out, dim=-1).float()


def inverse_order(order: Sequence[int]) -> list[int]:
    """``inv[i]`` = prompt position of caller-order document ``i``, from ``order[j]`` = caller index at position j."""
    inv = [0] * len(order)
    for j, i in enumerate(order):
        inv[i] = j
    return inv


def document_scores(a_q: Any, a_na: Any, spans: Sequence[tuple[int, int]],
                    order: Sequence[int]) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per-document raw, N/A, calibrated and masked-calibrated sums, in the caller's document order.

    Parameters
    ----------
    a_q, a_na : Tensor (T_prefix,)
        Per-token span mass of the real and of the N/A query.
    spans : token ranges ``[start, end)`` of the documents, in prompt order.
    order : ``order[j]`` = caller index of the j-th document in the prompt.

    The masked sum drops the document's tokens whose calibrated mass is at most mean - 2 std.
    """
    c = a_q - a_na
    raw, na, cal, masked = [], [], [], []
    for s, e in spans:
        seg = c[s:e].double()
        raw.append(float(a_q[s:e].double().sum()))
        na.append(float(a_na[s:e].double().sum()))
        cal.append(float(seg.sum()))
        masked.append(float(seg[seg > seg.mean() - 2 * seg.std()].sum()) if seg.numel() > 1 else float(seg.sum()))
    inv = inverse_order(order)
    raw, na, cal, masked = ([xs[inv[i]] for i in range(len(inv))] for xs in (raw, na, cal, masked))
    return raw, na, cal, masked


def calibration_scores(masses: Any, calibration: str) -> list[float]:
    """The document scores of ``calibration`` (``none`` | ``na`` | ``masked_na``) from an object with
    ``raw``, ``calibrated`` and ``masked`` lists (:class:`~attnsift.rerank.icr_masses.ICRMasses`)."""
    picks = {"none": masses.raw, "na": masses.calibrated, "masked_na": masses.masked}
    if calibration not in picks:
        raise ValueError(f"calibration must be one of {', '.join(picks)}; got {calibration!r}")
    return list(picks[calibration])


def final_scores(masses: Any, calibration: str, head_scorer: Any, layers: Sequence[int], fusion: str,
                 fusion_weight: float) -> list[float]:
    """The scores one ICR configuration gives a scored prompt.

    The attention scores are the calibration's, or the head profile's (``head_scorer``:
    :class:`~attnsift.rerank.head_scoring.HeadScorer`) from the per-head masses of ``layers``; then
    the optional fusion with ``masses.first_stage`` (``fusion="profile"`` takes method and weight
    from the head scorer).
    """
    from attnsift.rerank.head_scoring import fuse

    if head_scorer is not None:
        s = head_scorer.attention_scores(masses.head_raw.numpy(), masses.head_na.numpy(),
                                         masses.head_masked.numpy(), layers)
    else:
        s = np.asarray(calibration_scores(masses, calibration), dtype=np.float64)
    first = np.asarray(masses.first_stage, dtype=np.float64)
    if fusion == "profile":
        s = fuse(s, first, head_scorer.fusion_weight, head_scorer.fusion)
    elif fusion != "none":
        s = fuse(s, first, float(fusion_weight), fusion)
    return [float(x) for x in s]
