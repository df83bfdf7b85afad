"""Per-head analysis of attention reranking: which (layer, head) pairs carry relevance (issue 7).

Two steps, kept apart so that the expensive one runs once:

1. :func:`collect_head_masses` runs ICR once per query of a first-stage run and stores, for every
   (layer, head), the document masses of the real query, of the content-free "N/A" query and the
   per-head 2-sigma-masked calibrated mass (``ICRDetails.head_raw / head_na / head_masked``). One
   ``.npz`` file per query, written atomically, so an interrupted collection resumes where it stopped.
2. Everything else (per-head nDCG@10, the layer curve, head selection, calibration variants, position
   debiasing, fusion with the first stage) is arithmetic on those arrays: :mod:`attnsift.analysis.headsel`.

Selection is made on held-out queries only (by default NFCorpus *dev*), never on the queries whose
figures are reported.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from attnsift.io import atomic_file
from attnsift.progress import Estimator, bar
from attnsift.types import Run

log = logging.getLogger(__name__)

FEATURE_VERSION = 1
# ICR options that only pick among stored quantities: they do not change the masses.
_SCORING_ONLY = ("calibration", "fusion", "fusion_weight", "scoring_layer")


def _safe(qid: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", qid)[:60]
    return f"{slug}-{hashlib.sha1(qid.encode()).hexdigest()[:8]}"


@dataclass
class QueryFeatures:
    """The stored arrays of one query (candidates in first-stage order)."""

    qid: str
    doc_ids: list[str]
    first_stage: Any  # (N,) first-stage scores
    raw: Any  # (L, H, N) real-query mass
    na: Any  # (L, H, N) N/A mass
    masked: Any  # (L, H, N) per-head masked calibrated mass
    seconds: float = 0.0
    icr_masked: Any = None  # (N,) ICR's masked_na score over all heads (the published recipe)


def collect_head_masses(reranker: Any, run: Run, folder: str | Path, top_k: int = 20, progress: bool | None = None,
                        meta: Mapping[str, Any] | None = None, hint: str = "") -> Path:
    """Run ``reranker`` (an :class:`~attnsift.rerank.icr.ICRReranker` over all layers and heads) on the
    top ``top_k`` candidates of every ranking of ``run`` and store the per-head masses under ``folder``.

    Queries already stored (same ``meta``) are skipped, so the call resumes an interrupted collection.
    Rankings must carry document texts (see :func:`attnsift.pipeline.attach_texts`).

    Parameters
    ----------
    progress : bool, optional
        A progress line on stderr (:mod:`attnsift.progress`; None: the process setting), and, when the
        queries left will take over a minute, one estimate line measured on the first ones.
    hint : str
        What shortens the run, appended to the estimate line.
    """
    import numpy as np

    from attnsift.rerank.blockrank import BlockRankReranker
    from attnsift.rerank.icr import ICRReranker

    if isinstance(reranker, BlockRankReranker):
        kind = "blockrank"
        if reranker.config.heads is not None:
            raise ValueError("head analysis needs every head: build the BlockRankReranker without heads")
    elif isinstance(reranker, ICRReranker):
        kind = "icr"
        if reranker.config.heads is not None or len(reranker.layers) != reranker.num_layers:
            raise ValueError("head analysis needs every layer and head: build the ICRReranker without heads / "
                             "start_layer / end_layer")
    else:
        raise TypeError(f"collect_head_masses needs an ICRReranker or a BlockRankReranker, got {type(reranker).__name__}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = getattr(reranker, "model_name", None) or getattr(getattr(reranker.model, "config", None), "_name_or_path", "")
    info = {"version": FEATURE_VERSION, "top_k": top_k, "model": name, **({"reranker": kind} if kind != "icr" else {}),
            "config": {k: v for k, v in vars(reranker.config).items() if k not in _SCORING_ONLY}, **dict(meta or {})}
    meta_path = folder / "meta.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        new = json.loads(json.dumps(info))
        # Options added to the reranker after a collection are the same settings when at their defaults.
        defaults = {f.name: f.default for f in dataclasses.fields(reranker.config)}
        for k in set(new.get("config", {})) - set(old.get("config", {})):
            if new["config"][k] == json.loads(json.dumps(defaults.get(k))):
                del new["config"][k]
        if old != new:
            raise ValueError(f"{folder} holds features collected with other settings ({old}); use another folder "
                             "or delete this one")
    else:
        with atomic_file(meta_path, "w") as fh:
            json.dump(info, fh, indent=1)
    todo = [rk for rk in run.values() if not (folder / f"{_safe(rk.query.id)}.npz").exists()]
    device = getattr(reranker, "device", None)
    estimate = Estimator(len(todo), "queries", hint=hint, progress=progress,
                         device=str(device) if device is not None else None)
    for rk in bar(todo, desc=f"head masses ({folder.name})", total=len(todo), unit="q", progress=progress):
        started = time.perf_counter()
        top = rk.top(top_k)
        if len(top) == 0:
            continue
        path = folder / f"{_safe(rk.query.id)}.npz"
        common = dict(qid=np.array(rk.query.id), doc_ids=np.array([c.doc_id for c in top.candidates]),
                      first_stage=np.array([c.score for c in top.candidates], dtype=np.float64))
        if kind == "blockrank":
            # BlockRank has no content-free pass: na is zero and "raw" holds the per-head scores.
            t0 = time.perf_counter()
            _, per_head = reranker.score_heads(top)
            arrays = dict(raw=per_head, na=np.zeros_like(per_head), masked=per_head,
                          seconds=np.array(time.perf_counter() - t0))
        else:
            try:
                m = reranker.masses(top)  # the forward passes only: every scoring is arithmetic on these
            except ValueError as exc:
                raise ValueError(f"query {rk.query.id}: the candidates did not fit one prompt; lower top_k or "
                                 "max_words") from exc
            arrays = dict(raw=m.head_raw.numpy(), na=m.head_na.numpy(), masked=m.head_masked.numpy(),
                          icr_masked=np.array(m.masked, dtype=np.float64), seconds=np.array(m.seconds))
        with atomic_file(path, "wb") as fh:
            np.savez(fh, **common, **arrays)
        estimate.observe(time.perf_counter() - started)
    return folder


def load_head_masses(folder: str | Path, qids: Sequence[str] | None = None) -> list[QueryFeatures]:
    """Read what :func:`collect_head_masses` stored (all queries, or ``qids`` in that order)."""
    import numpy as np

    folder = Path(folder)
    if not (folder / "meta.json").exists():
        raise FileNotFoundError(f"{folder} holds no head masses (no meta.json); run `attnsift analyze heads` first")
    paths = [folder / f"{_safe(q)}.npz" for q in qids] if qids is not None else sorted(folder.glob("*.npz"))
    out = []
    for p in paths:
        if not p.exists():
            continue
        with np.load(p) as z:
            out.append(QueryFeatures(str(z["qid"]), [str(x) for x in z["doc_ids"]], z["first_stage"], z["raw"],
                                     z["na"], z["masked"], float(z["seconds"]),
                                     z["icr_masked"] if "icr_masked" in z.files else None))
    return out


def features_folder(root: str | Path, model: str, dataset: str, split: str, first: str, top_k: int,
                    max_words: int | None) -> Path:
    """The conventional folder of one collection under ``root``."""
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{model}/{dataset}-{split}-{first}{top_k}-w{max_words}")
    return Path(root) / slug
