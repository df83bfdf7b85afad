"""Re-ranking an IVF-PQ index's candidates with finer codes (faiss ``IndexRefine``).

IVF-PQ's 48-byte codes cap its recall: at 1M synthetic 384-d vectors recall@100 against exact search
stayed at 0.65 whatever ``nprobe`` (``benchmarks/results/scale_dense.md``). A refined index keeps a
second copy of every vector in finer codes; a search asks the PQ index for ``k_factor * k``
candidates and re-scores them with the second copy, keeping the best ``k``:

=========  ==========================  =====================  ==============
refine     second copy                 bytes per vector       8,841,823 x 384
=========  ==========================  =====================  ==============
``sq8``    8-bit scalar quantiser      ``dim``                3.4 GB
``fp16``   16-bit floats               ``2 * dim``            6.8 GB
``flat``   the float32 vectors         ``4 * dim``            13.6 GB
=========  ==========================  =====================  ==============

The second copy is filled in the same streamed pass as the PQ codes (never all float vectors at
once unless ``refine="flat"``, which keeps them), is written in the same ``index.faiss`` file (so the
manifest's checksum covers it) and must fit in RAM: :func:`check_refine_memory` refuses one that
would not, in one line, before any training. ``k_factor`` [8] is a search-time option too.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

REFINE_TYPES = ("sq8", "fp16", "flat")
REFINE_PARAMS = ("refine", "k_factor")
DEFAULT_K_FACTOR = 8


def refine_bytes_per_vector(refine: str, dim: int) -> int:
    """Bytes one vector takes in the second copy (``dim``, ``2 dim`` or ``4 dim``)."""
    return {"sq8": 1, "fp16": 2, "flat": 4}[refine] * dim


def resolve_refine(params: dict[str, Any]) -> dict[str, Any]:
    """``{"refine": ..., "k_factor": ...}`` from ``params`` (an ivfpq index's options), checked; ``{}``
    without ``refine`` (or ``refine="none"``).

    Raises
    ------
    ValueError
        An unknown refine type, a ``k_factor`` below 1 or not an integer, or ``k_factor`` without ``refine``.
    """
    refine, k_factor = params.get("refine"), params.get("k_factor")
    if refine in (None, "none"):
        if k_factor is not None:
            raise ValueError(f"k_factor={k_factor!r} sets how many PQ candidates a refine stage re-scores; "
                             f"give refine= ({', '.join(REFINE_TYPES)}) too, or drop k_factor")
        return {}
    if refine not in REFINE_TYPES:
        raise ValueError(f"refine must be one of {', '.join(REFINE_TYPES)} (or none), got {refine!r}")
    k_factor = DEFAULT_K_FACTOR if k_factor is None else k_factor
    check_k_factor(k_factor)
    return {"refine": refine, "k_factor": int(k_factor)}


def check_k_factor(k_factor: Any, unrefined: str | None = None) -> None:
    """ValueError unless ``k_factor`` is an integer >= 1, or when the index is not refined (``unrefined``:
    its type)."""
    if unrefined is not None:
        raise ValueError(f"k_factor applies to an ivfpq index built with refine={'|'.join(REFINE_TYPES)}, this one is "
                         f"{unrefined!r} without refine; rebuild it with refine or drop k_factor")
    if isinstance(k_factor, bool) or not isinstance(k_factor, (int, np.integer)) or k_factor < 1:
        raise ValueError(f"k_factor must be an integer >= 1 (PQ candidates re-scored per result), got {k_factor!r}")


def total_ram() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_refine_memory(refine: str, n: int, dim: int, base_bytes: int) -> None:
    """Refuse, in one line, a refined index whose second copy plus PQ index (``base_bytes``) exceeds RAM."""
    total = total_ram()
    need = n * refine_bytes_per_vector(refine, dim) + base_bytes
    if total is None or need <= total:
        return
    cheaper = [r for r in REFINE_TYPES if n * refine_bytes_per_vector(r, dim) + base_bytes <= total]
    hint = (f"use refine={cheaper[-1]} ({(n * refine_bytes_per_vector(cheaper[-1], dim) + base_bytes) / 1e9:.1f} GB)"
            if cheaper else "drop refine (raise nprobe or pq_m instead)")
    raise ValueError(f"refine={refine} keeps {refine_bytes_per_vector(refine, dim)} bytes per vector: {n} x {dim} need "
                     f"about {need / 1e9:.1f} GB in memory, more than this machine's {total / 1e9:.1f} GB; {hint}")


def make_refined(faiss: Any, base: Any, refine: str, dim: int, metric: str, k_factor: int) -> Any:
    """``faiss.IndexRefine`` over ``base`` with a ``refine`` second copy (untrained, empty)."""
    fmetric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    if refine == "flat":
        second = faiss.IndexFlat(dim, fmetric)
    else:
        qtype = faiss.ScalarQuantizer.QT_8bit if refine == "sq8" else faiss.ScalarQuantizer.QT_fp16
        second = faiss.IndexScalarQuantizer(dim, qtype, fmetric)
    index = faiss.IndexRefine(base, second)
    index.k_factor = float(k_factor)
    return index


def reserve(faiss: Any, index: Any, n: int) -> None:
    """Reserve room for ``n`` vectors in a refined index's second copy.

    Its codes grow by doubling: at the last doubling the old and the new buffer are both resident
    (3.2 + 3.2 GB of sq8 codes at MS MARCO size). Growing to the full size once and back to empty keeps
    the capacity, so filling never copies them (the pages are touched now, not later).
    """
    second = faiss.downcast_index(index.refine_index)
    codes = getattr(second, "codes", None)
    if codes is None or not hasattr(codes, "resize") or int(index.ntotal) != 0:
        return
    codes.resize(int(n) * int(second.code_size))
    codes.resize(0)


def base_index(faiss: Any, index: Any) -> Any:
    """The IVF index inside ``index`` (itself when it is not refined), as its concrete faiss class."""
    if isinstance(index, faiss.IndexRefine):
        return faiss.downcast_index(index.base_index)
    return index


def refine_search_params(faiss: Any, k_factor: int, nprobe: int) -> tuple[Any, Any]:
    """Search parameters of a refined IVF index: ``(params, base_params)``; keep both alive while searching
    (faiss holds a bare pointer to the base's)."""
    base = faiss.SearchParametersIVF(nprobe=int(nprobe))
    params = faiss.IndexRefineSearchParameters(k_factor=float(k_factor), base_index_params=base)
    return params, base
