"""Which corpus an index was built on, and the check that an index is used with that corpus.

Every saved index (BM25, Lucene BM25, dense, late interaction) records in its ``manifest.json``::

    "corpus": {"fingerprint": "<64 hex: the corpus's content hash>", "dataset": "<data set name or null>"}

given to its ``save(path, corpus_fingerprint=..., dataset=...)``. The fingerprint is what
:meth:`attnsift.eval.datasets.Corpus.fingerprint` returns (the CLI's ``attnsift index`` records
``ds.corpus.fingerprint()`` and ``ds.name``). :func:`check_index_corpus` compares it with the corpus
an index is about to be searched for: another corpus is an error (its document ids would never match
the qrels, giving nDCG 0.0 with exit code 0), unless ``force=True``, which warns.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from attnsift.errors import IndexCorruptedError
from attnsift.io import read_manifest

log = logging.getLogger(__name__)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def corpus_fields(corpus_fingerprint: str | None = None, dataset: str | None = None) -> dict[str, Any]:
    """The manifest fields that record an index's corpus (``{"corpus": {...}}``).

    Parameters
    ----------
    corpus_fingerprint : str, optional
        The corpus's content hash (``Corpus.fingerprint()``: 64 lowercase hex characters).
    dataset : str, optional
        The data set's name, for messages.

    Raises
    ------
    TypeError
        A value that is not a string.
    ValueError
        A fingerprint that is not 64 hex characters.
    """
    if corpus_fingerprint is not None:
        if not isinstance(corpus_fingerprint, str):
            raise TypeError(f"corpus_fingerprint must be a string (Corpus.fingerprint()), got {type(corpus_fingerprint).__name__}")
        if not _HEX64.match(corpus_fingerprint):
            raise ValueError(f"corpus_fingerprint must be 64 lowercase hex characters (Corpus.fingerprint()), got {corpus_fingerprint!r}")
    if dataset is not None and (not isinstance(dataset, str) or not dataset.strip()):
        raise TypeError(f"dataset must be a non-empty string (the data set's name), got {dataset!r}")
    return {"corpus": {"fingerprint": corpus_fingerprint, "dataset": dataset}}


def _describe(fingerprint: str, dataset: str | None) -> str:
    return (f"data set {dataset!r}" if dataset else "a corpus") + f" (corpus {fingerprint[:12]})"


def check_index_corpus(path: str | Path, corpus_fingerprint: str, dataset: str | None = None,
                       force: bool = False) -> dict[str, Any]:
    """Check that the index at ``path`` was built on the corpus with ``corpus_fingerprint``.

    Reads the manifest only (no checksums; loading the index verifies those).

    Parameters
    ----------
    path : str or Path
        A saved index folder.
    corpus_fingerprint : str
        ``Corpus.fingerprint()`` of the corpus the index will be searched for.
    dataset : str, optional
        That data set's name, for the message.
    force : bool
        Use an index built on another corpus anyway, with a warning.

    Returns
    -------
    dict
        The ``corpus`` record of the manifest (``fingerprint`` and ``dataset``; both None for an index
        that recorded none, which is accepted with a warning since it cannot be checked).

    Raises
    ------
    IndexCorruptedError
        No index at ``path``, or (without ``force``) an index built on another corpus.
    """
    if corpus_fingerprint is None:
        raise TypeError("check_index_corpus needs the corpus's fingerprint (Corpus.fingerprint()), got None")
    wanted = corpus_fields(corpus_fingerprint, dataset)["corpus"]
    if not isinstance(force, bool):
        raise TypeError(f"force must be True or False, got {force!r}")
    manifest = read_manifest(path, kind=None, verify=False)
    recorded = manifest.get("corpus") if isinstance(manifest.get("corpus"), dict) else {}
    rec_fp, rec_ds = recorded.get("fingerprint"), recorded.get("dataset")
    if rec_fp is None:
        log.warning("the index at %s records no corpus (built by an older attnsift or without corpus_fingerprint): "
                    "cannot check that it belongs to %s; rebuild it with `attnsift index` to have it checked",
                    path, _describe(corpus_fingerprint, dataset))
        return {"fingerprint": None, "dataset": rec_ds}
    if rec_fp == corpus_fingerprint:
        return {"fingerprint": rec_fp, "dataset": rec_ds}
    msg = (f"the index at {path} was built on {_describe(rec_fp, rec_ds)}, not on {_describe(corpus_fingerprint, dataset)}: "
           "its document ids do not belong to this corpus")
    if force:
        log.warning("%s; using it anyway (force)", msg)
        return {"fingerprint": rec_fp, "dataset": rec_ds}
    build = f"`attnsift index --dataset {wanted['dataset']} --out DIR`" if wanted["dataset"] else "`attnsift index`"
    raise IndexCorruptedError(f"{msg}; build an index of this corpus ({build}) or pass --force (force=True) to use it anyway")
