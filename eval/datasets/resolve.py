"""Name resolution: from a path, a folder name, an alias or an ir_datasets id to a loaded data set."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

from attnsift.errors import DatasetError
from attnsift.eval.datasets.aliases import ALIASES
from attnsift.eval.datasets.base import Dataset, DatasetInfo, loader_for, register_loader, registered_loaders
from attnsift.eval.datasets.beir import BEIR
from attnsift.eval.datasets.folder import data_folder, describe_data_folder
from attnsift.eval.datasets.irds import irds_load, irds_missing, load_irds
from attnsift.eval.datasets.msmarco import MSMARCO

__all__ = ["load_dataset", "list_datasets"]

logger = logging.getLogger(__name__)

register_loader(BEIR)
register_loader(MSMARCO)
_FOLDER_KINDS = {"beir": "BEIR-layout folder", "msmarco": "MS MARCO passage folder"}


def _data_roots(data_dir: str | Path | None) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    return [data_folder()]


def _local_folders(roots: Sequence[Path]) -> list[Path]:
    out = []
    for r in roots:
        if r.is_dir():
            out += sorted(p for p in r.iterdir() if any(ld.matches(p) for ld in registered_loaders()))
    return out


def _default_rel_level(name: str) -> int:
    return 2 if re.search(r"trec-dl|\bdl(19|20|21|22|23)\b|dl-20", name.lower()) else 1


def _load_folder(path: Path, split: str, info: DatasetInfo) -> Dataset:
    return loader_for(path, BEIR).load(path, split, info)


def _folder_info(folder: str) -> DatasetInfo:
    """How to read a folder given by name or path: a known data set's folder (``trec-dl19-passage``) is
    that data set, with its relevance level and run names (as its alias ``dl19`` would load it), so the
    two ways of naming it never give different numbers."""
    for alias in ALIASES.values():
        if alias.folder == folder:
            return DatasetInfo(alias.name, alias.rel_level, alias.description, alias.run_aliases)
    return DatasetInfo(folder, _default_rel_level(folder))


def load_dataset(name: str, split: str = "test", data_dir: str | Path | None = None) -> Dataset:
    """Load an evaluation data set.

    Parameters
    ----------
    name : str
        A path to a data set folder (BEIR layout, or any registered format); a folder name under
        ``data_dir`` (default: :func:`~attnsift.eval.datasets.folder.data_folder`, i.e. ``$ATTNSIFT_DATA``,
        else the folder ``make install`` recorded, else ``~/.cache/attnsift/data``); an alias (``scifact``, ``nfcorpus``, ``dl19``,
        ``msmarco``); or an ir_datasets id (``beir/scifact/test``). Aliases use the local folder when
        present, else ir_datasets.
    split : str
        Qrels split (``qrels/<split>.tsv``); nfcorpus also has ``dev`` and ``train``.
    data_dir : str or Path, optional
        Folder holding data set folders; overrides the data folder.

    Raises
    ------
    DatasetError
        Unknown name (lists aliases and local folders), a folder missing files, or offline with
        nothing local (says which files to place where).
    """
    if not isinstance(name, (str, Path)) or not str(name).strip():
        raise TypeError(f"data set name must be a non-empty string or a path, got {name!r}")
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string such as 'test', got {split!r}")
    name = str(name)
    roots = _data_roots(data_dir)
    alias = ALIASES.get(name.lower())

    p = Path(name).expanduser()
    looks_like_path = p.is_absolute() or name.startswith((".", "~"))
    if alias is None and (looks_like_path or (os.sep in name and p.exists())):
        if not p.exists():
            raise DatasetError(
                f"no data set folder at {p}; create it in BEIR layout (corpus.jsonl, queries.jsonl, "
                f"qrels/{split}.tsv) or give an alias ({', '.join(ALIASES)})"
            )
        if not p.is_dir():
            raise DatasetError(f"{p} is a file; give a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/{split}.tsv)")
        return _load_folder(p, split, _folder_info(p.name))

    if alias is None:
        for r in roots:
            if (r / name).is_dir():
                return _load_folder(r / name, split, _folder_info(name))

    if alias is not None:
        info = DatasetInfo(alias.name, alias.rel_level, alias.description, alias.run_aliases)
        for r in roots:
            if (r / alias.folder).is_dir():
                return _load_folder(r / alias.folder, alias.folder_splits.get(split, split), info)
        dataset_id = alias.irds.get(split)
        if dataset_id is None:
            raise DatasetError(
                f"data set {alias.name!r} has no split {split!r} in ir_datasets; available: {', '.join(alias.irds)}"
            )
        return load_irds(dataset_id, split, info, alias.folder, roots)

    if "/" in name and not p.exists():
        return load_irds(name, split, DatasetInfo(name, _default_rel_level(name)), None, roots)

    local = [f.name for f in _local_folders(roots)]
    about = "" if data_dir is not None else " T" + describe_data_folder()[1:] + "."
    raise DatasetError(
        f"unknown data set {name!r}. Known aliases: {', '.join(ALIASES)}; local folders under "
        f"{', '.join(map(str, roots))}: {', '.join(local) or 'none'}; or give a path to a BEIR-layout folder or an "
        f"ir_datasets id such as 'beir/scifact/test'.{about}"
    )


def list_datasets(data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Known aliases and local folders, with availability and cheap counts.

    Returns
    -------
    list of dict
        ``name, path (or None), available, docs, queries (judged test queries), source, description``.
        Counts are ``None`` when not cheap to get (ir_datasets-only sets).
    """
    roots = _data_roots(data_dir)
    rows: list[dict[str, Any]] = []
    used: set[Path] = set()

    def local_row(name: str, path: Path, description: str, split: str = "test") -> dict[str, Any]:
        used.add(path.resolve())
        summary = loader_for(path, BEIR).summary(path, split)
        return {
            "name": name,
            "path": str(path),
            "available": summary["available"],
            "docs": summary["docs"],
            "queries": summary["queries"],
            "source": f"local:{path}",
            "description": description or _FOLDER_KINDS.get(loader_for(path, BEIR).name, "folder") + f" {path.name}",
        }

    for alias in ALIASES.values():
        folder = next((r / alias.folder for r in roots if (r / alias.folder).is_dir()), None)
        if folder is not None:
            rows.append(local_row(alias.name, folder, alias.description, alias.folder_splits.get("test", "test")))
            continue
        dataset_id = alias.irds["test"]
        available = False
        try:
            ds = irds_load(dataset_id)
            available = not irds_missing(ds, ("queries_handler", "qrels_handler", "docs_handler"))
        except Exception as exc:  # listing must not fail because ir_datasets misbehaves
            logger.debug("ir_datasets check of %s failed: %s", dataset_id, exc)
        rows.append({"name": alias.name, "path": None, "available": available, "docs": None, "queries": None,
                     "source": f"ir_datasets:{dataset_id}", "description": alias.description})
    for folder in _local_folders(roots):
        if folder.resolve() not in used:
            rows.append(local_row(folder.name, folder, ""))
    return rows
