"""Saved indexes as first stages, for the bench and the CLI.

A saved index (``attnsift index``, or ``build_index(...).save`` in Python) records in its
``manifest.json`` its kind, its encoder (dense, late, hybrid) and the corpus it was built on
(:mod:`attnsift.indexes.corpus`). :func:`read_saved_index` reads that record without loading the index
(plus a content fingerprint for the bench's keys), so ``rerank --index`` and ``bench quality --index``
check everything before any work; :func:`load_saved_index` loads it; :func:`match_indexes` pairs each
index with the data set whose corpus it was built on.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["SavedIndex", "read_saved_index", "load_saved_index", "match_indexes", "ENCODER_STAGES",
           "default_encoder"]

#: First stages that run an encoder (``--encoder``, spec key ``encoder=``).
ENCODER_STAGES = ("dense", "late", "hybrid")

# A manifest's kind -> the first stage it stands in for.
_KIND_TO_STAGE = {"bm25": "bm25", "bm25-lucene": "bm25", "dense": "dense", "late": "late", "hybrid": "hybrid"}


def default_encoder(stage: str) -> str | None:
    """The encoder a first stage uses when none is named (``minilm`` for dense, late and hybrid)."""
    from attnsift.registry import DEFAULT_MODELS

    if stage not in ENCODER_STAGES:
        return None
    return DEFAULT_MODELS.get(stage, DEFAULT_MODELS["dense"])


@dataclass(frozen=True)
class SavedIndex:
    """What a saved index's manifest says about it (read without loading the index).

    Attributes
    ----------
    path : Path
        The index folder.
    kind : str
        The first stage it stands in for: ``bm25``, ``dense``, ``late`` or ``hybrid``.
    manifest_kind : str
        The manifest's own kind (``bm25-lucene`` is a ``bm25`` first stage).
    encoder : str or None
        The encoder's name (dense, late, hybrid).
    corpus_fingerprint, dataset : str or None
        The corpus it was built on (None for an index that recorded none).
    identity : str
        sha256 of ``manifest.json``, which holds every file's checksum: the index's content fingerprint.
    """

    path: Path
    kind: str
    manifest_kind: str
    encoder: str | None
    corpus_fingerprint: str | None
    dataset: str | None
    identity: str


def read_saved_index(path: str | Path) -> SavedIndex:
    """Read the record of the index at ``path`` (:func:`attnsift.registry.index_info`: the manifest only;
    loading verifies the files).

    Raises
    ------
    IndexCorruptedError
        No index there, no manifest, or a folder of a kind that is no first stage (the message says what to do).
    """
    from attnsift.io import MANIFEST
    from attnsift.registry import index_info

    path = Path(path).expanduser()
    info = index_info(path)
    kind = info["retriever"]
    identity = hashlib.sha256((path / MANIFEST).read_bytes()).hexdigest()
    return SavedIndex(path, _KIND_TO_STAGE.get(kind, kind), kind, info.get("encoder"), info.get("corpus_fingerprint"),
                      info.get("dataset"), identity)


def load_saved_index(saved: SavedIndex, *, encoder: str | None = None, device: str | None = None,
                     progress: bool | None = None, options: Mapping[str, Any] | None = None) -> Any:
    """Load a saved index as a first stage (:func:`attnsift.registry.load_index`).

    Parameters
    ----------
    saved : SavedIndex
        From :func:`read_saved_index`.
    encoder : str, optional
        The query encoder; it must be the one the index was built with (default: that one).
    device : str, optional
        Where the query encoder runs (dense, late, hybrid; ignored for BM25, which runs no model).
    progress : bool, optional
        One line while loading (None: the process setting).
    options : mapping, optional
        Search-time options of the index's kind (dense ``nprobe`` / ``ef_search``, ...); build options are
        refused by the loader (the index keeps how it was built).

    Raises
    ------
    ValueError
        An encoder for a BM25 index, another encoder than the index's, build options, or damaged files.
    """
    from attnsift.registry import load_index

    return load_index(saved.path, encoder=encoder, device=device if saved.kind in ENCODER_STAGES else None,
                      progress=progress, options=dict(options or {}))


def match_indexes(indexes: Sequence[SavedIndex], datasets: Mapping[str, str]) -> dict[str, list[SavedIndex]]:
    """Pair every saved index with the data set whose corpus it was built on.

    Parameters
    ----------
    indexes : sequence of SavedIndex
    datasets : mapping
        Data set name -> ``Corpus.fingerprint()`` of its corpus.

    Returns
    -------
    dict
        Data set name -> its indexes (at most one per first stage kind and encoder).

    Raises
    ------
    ValueError
        An index that records no corpus or matches none of the data sets, or two indexes of the same
        kind and encoder for one data set.
    """
    out: dict[str, list[SavedIndex]] = {name: [] for name in datasets}
    by_fp: dict[str, list[str]] = {}
    for name, fp in datasets.items():
        by_fp.setdefault(fp, []).append(name)
    listed = ", ".join(datasets) or "none"
    for saved in indexes:
        if saved.corpus_fingerprint is None:
            raise ValueError(f"--index {saved.path} records no corpus, so it cannot be matched to a data set; "
                             "rebuild it with `attnsift index`")
        names = by_fp.get(saved.corpus_fingerprint)
        if not names:
            built = f"data set {saved.dataset!r}" if saved.dataset else "another corpus"
            raise ValueError(f"--index {saved.path} was built on {built} (corpus {saved.corpus_fingerprint[:12]}), "
                             f"which is none of the listed data sets ({listed}); add that --dataset or drop the --index")
        for name in names:
            twin = next((s for s in out[name] if (s.kind, s.encoder) == (saved.kind, saved.encoder)), None)
            if twin is not None:
                raise ValueError(f"--index {saved.path} and --index {twin.path} are both {saved.kind} indexes of {name}; "
                                 "give one")
            out[name].append(saved)
    return out
