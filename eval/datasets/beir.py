"""The BEIR folder layout: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``, optional
``runs/*.trec`` (a provided first-stage run per file, named by the file name before its first '.')."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from attnsift.errors import DataFormatError, DatasetError
from attnsift.eval.datasets.base import Corpus, Dataset, DatasetInfo
from attnsift.eval.datasets.jsonl import count_lines, read_queries

__all__ = ["BeirLoader", "BEIR"]

logger = logging.getLogger(__name__)


def _splits(path: Path) -> list[str]:
    return sorted(p.stem for p in (path / "qrels").glob("*.tsv")) if (path / "qrels").is_dir() else []


def _check_folder(path: Path, split: str) -> None:
    """Raise DatasetError before any file is read when ``path`` cannot be evaluated for ``split``."""
    has = {f: (path / f).is_file() for f in ("corpus.jsonl", "queries.jsonl")}
    splits = _splits(path)
    if has["corpus.jsonl"] and not has["queries.jsonl"] and not splits:
        raise DatasetError(
            f"{path} holds a corpus.jsonl but no queries.jsonl or qrels/{split}.tsv: evaluation needs queries and "
            f"relevance judgements (BEIR layout). To index and search your own documents, use `attnsift index --input "
            f"{path / 'corpus.jsonl'} --out DIR` and `attnsift search --index DIR \"query\"`"
        )
    missing = [f for f, ok in has.items() if not ok]
    if all(has.values()) and splits and split not in splits:
        raise DatasetError(f"data set folder {path} has no split {split!r} (no qrels/{split}.tsv); "
                           f"splits present: {', '.join(splits)}")
    if split not in splits:
        missing.append(f"qrels/{split}.tsv")
    if missing:
        raise DatasetError(
            f"data set folder {path} is missing {', '.join(missing)}; a BEIR-layout folder needs corpus.jsonl, "
            f"queries.jsonl and qrels/<split>.tsv (splits present: {', '.join(splits) or 'none'})"
        )


class BeirLoader:
    """Loads BEIR-layout folders (a :class:`~attnsift.eval.datasets.base.DatasetLoader`)."""

    name = "beir"

    def matches(self, path: Path) -> bool:
        """A folder holding ``corpus.jsonl``."""
        return path.is_dir() and (path / "corpus.jsonl").is_file()

    def load(self, path: Path, split: str, info: DatasetInfo) -> Dataset:
        """Read ``path`` for ``split``: queries in file order, only those judged in the split.

        Raises
        ------
        DatasetError
            A required file is missing (all missing files and the splits present are named).
        DataFormatError
            A malformed line (file and line number).
        """
        from attnsift.trec import read_qrels

        _check_folder(path, split)
        qrels_path = path / "qrels" / f"{split}.tsv"
        qrels = read_qrels(qrels_path)
        queries = read_queries(path / "queries.jsonl", keep=qrels)
        no_text = [q for q in qrels if q not in queries]
        if no_text:
            logger.warning("%s: %d judged query ids have no text in queries.jsonl and are left out, e.g. %s",
                           qrels_path, len(no_text), no_text[:3])
        # Queries in file order; qrels restricted to them.
        qrels = {q: qrels[q] for q in queries}
        runs: dict[str, Path] = {}
        if (path / "runs").is_dir():
            for f in sorted((path / "runs").glob("*.trec")):
                runs.setdefault(f.name.split(".")[0], f)
        return Dataset(
            name=info.name,
            corpus=Corpus.from_jsonl(path / "corpus.jsonl"),
            queries=queries,
            qrels=qrels,
            runs=runs,
            rel_level=info.rel_level,
            source=f"local:{path}",
            description=info.description or f"BEIR-layout folder {path.name}",
            split=split,
            run_aliases={a: t for a, t in info.run_aliases.items() if t in runs},
            read_from={"queries": path / "queries.jsonl", "qrels": qrels_path},
        )

    def summary(self, path: Path, split: str = "test") -> dict[str, Any]:
        """``available``, ``docs`` (non-empty corpus lines) and ``queries`` (judged in ``split``)."""
        from attnsift.trec import read_qrels

        qrels_path = path / "qrels" / f"{split}.tsv"
        nq = None
        if qrels_path.is_file():
            try:
                nq = len(read_qrels(qrels_path))
            except (DataFormatError, OSError):
                nq = None
        return {
            "available": self.matches(path) and (path / "queries.jsonl").is_file() and qrels_path.is_file(),
            "docs": count_lines(path / "corpus.jsonl") if (path / "corpus.jsonl").is_file() else None,
            "queries": nq,
        }


BEIR = BeirLoader()
