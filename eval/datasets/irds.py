"""The ir_datasets backend: queries and qrels read at once, documents through its docs store.

Offline, a quick probe finds which source files ir_datasets still needs (it walks the dataset's
handlers for download objects whose cache file is absent; ir_datasets has no public API for this, so
the walk reads its private ``_cache_path`` / ``_path`` attributes) and raises
:class:`~attnsift.errors.DatasetError` at once, naming those files, instead of a download that hangs.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlparse

from attnsift.errors import DatasetError
from attnsift.eval.datasets.aliases import ALIASES
from attnsift.eval.datasets.base import OFFLINE_ENV, Corpus, Dataset, DatasetInfo
from attnsift.eval.datasets.folder import data_folder_info, describe_data_folder
from attnsift.fingerprint import combine, folder_fingerprint
from attnsift.types import Document, Query

__all__ = ["IrdsStore", "irds_files", "irds_load", "irds_missing", "load_irds"]

Missing = list[tuple[Path | None, list[str]]]  # (cache path, download urls) per source still needed


def irds_load(dataset_id: str) -> Any:
    """``ir_datasets.load(dataset_id)``; an unknown id raises DatasetError listing the aliases."""
    import ir_datasets

    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        raise DatasetError(
            f"{dataset_id!r} is not an ir_datasets id (see https://ir-datasets.com); known aliases: "
            f"{', '.join(ALIASES)}"
        ) from None


def _irds_sources(obj: Any, out: Missing, seen: set[int], depth: int = 0, outer: Path | None = None) -> None:
    """Collect the download sources an ir_datasets handler still needs: ``(cache path, urls)``.

    A cached file that exists stops the walk (what it is built from is not needed any more). A
    download without its own cache file is reported under the nearest enclosing cache path
    (``outer``), which is where ir_datasets keeps what it streams.
    """
    from ir_datasets.util.download import Download

    if id(obj) in seen or depth > 10 or isinstance(obj, (str, bytes, int, float, bool, type(None), Path)):
        return
    seen.add(id(obj))
    if isinstance(obj, Download):
        cache = Path(obj._cache_path) if getattr(obj, "_cache_path", None) else outer
        if cache is None or not cache.exists():
            urls = [u for u in (getattr(m, "url", None) for m in getattr(obj, "mirrors", [])) if u]
            out.append((cache, urls))
        return
    own = getattr(obj, "_path", None)
    if isinstance(own, (str, Path)):
        if Path(own).exists():
            return
        outer = Path(own)
    if isinstance(obj, (list, tuple, set)):
        for x in obj:
            _irds_sources(x, out, seen, depth + 1, outer)
        return
    if isinstance(obj, dict):
        for x in obj.values():
            _irds_sources(x, out, seen, depth + 1, outer)
        return
    d = getattr(obj, "__dict__", None)
    if d:
        for x in d.values():
            _irds_sources(x, out, seen, depth + 1, outer)


def irds_files(ds: Any, handlers: Sequence[str]) -> list[Path]:
    """The files on this machine behind ``handlers`` of ``ds``: the cache files of its downloads and
    the ``_path`` files of its handlers (private attributes, as in :func:`irds_missing`), sorted."""
    found: set[Path] = set()
    seen: set[int] = set()

    def walk(obj: Any, depth: int) -> None:
        if id(obj) in seen or depth > 10 or isinstance(obj, (str, bytes, int, float, bool, type(None), Path)):
            return
        seen.add(id(obj))
        for attr in ("_cache_path", "_path"):
            p = getattr(obj, attr, None)
            if isinstance(p, (str, Path)) and Path(p).is_file():
                found.add(Path(p))
        items = obj if isinstance(obj, (list, tuple, set)) else (obj.values() if isinstance(obj, dict)
                                                               else (getattr(obj, "__dict__", None) or {}).values())
        for x in items:
            walk(x, depth + 1)

    for h in handlers:
        try:
            handler = getattr(ds, h)()
        except Exception:  # the data set has no such component
            continue
        walk(handler, 0)
    return sorted(found)


def irds_missing(ds: Any, handlers: Sequence[str]) -> Missing:
    """The source files that ``handlers`` (e.g. ``"docs_handler"``) of ``ds`` still need, deduplicated."""
    out: Missing = []
    seen: set[int] = set()
    for h in handlers:
        try:
            handler = getattr(ds, h)()
        except Exception:  # the data set has no such component
            continue
        _irds_sources(handler, out, seen)
    uniq: dict[str, tuple[Path | None, list[str]]] = {}
    for cache, urls in out:
        uniq.setdefault(str(cache) + "|" + ",".join(urls), (cache, urls))
    return list(uniq.values())


def _where_message(ds: Any, handlers: Sequence[str]) -> str:
    missing = irds_missing(ds, handlers)
    if not missing:
        return ""
    parts = []
    for cache, urls in missing:
        src = f" (from {' or '.join(urls)})" if urls else ""
        parts.append(f"{cache}{src}" if cache is not None else f"a file streamed from {' or '.join(urls)}")
    return "ir_datasets needs: " + "; ".join(parts) + "."


def _online(urls: Sequence[str], timeout: float = 3.0) -> bool:
    """Can one of the download hosts be reached? A quick TCP connect, so offline fails in seconds."""
    if os.environ.get(OFFLINE_ENV, "").lower() in ("1", "true", "yes"):
        return False
    for u in urls:
        p = urlparse(u)
        if not p.hostname:
            continue
        try:
            with socket.create_connection((p.hostname, p.port or (443 if p.scheme == "https" else 80)), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def _offline_message(name: str, split: str, dataset_id: str, missing: Missing, folder: str | None,
                     roots: Sequence[Path]) -> str:
    lines = [f"data set {name!r} (split {split!r}) is not available on this machine and its download hosts cannot be reached."]
    if folder is not None:
        info = data_folder_info()
        root = Path(roots[0]) if roots else Path(info["path"])
        if root == Path(info["path"]):
            where = describe_data_folder(info)
        else:
            where = f"the data folder given is {root}; pass another data_dir=... to change it"
        lines.append(f"Looked for {root / folder}/: {where}.")
        if folder == "msmarco-passage":
            lines.append(f"Either place the official MS MARCO passage files at {root / folder}/ (collection.tsv or "
                         "collection.tar.gz, and the split's queries and qrels, e.g. queries.dev.small.tsv and "
                         "qrels.dev.small.tsv; optional top1000.dev.tsv),")
        else:
            lines.append(
                f"Either place the BEIR-layout files at {root / folder}/ (corpus.jsonl, queries.jsonl, qrels/{split}.tsv"
                + (", runs/*.trec" if name == "dl19" else "")
                + "),"
            )
        lines.append(f"or place the ir_datasets source file(s) for {dataset_id!r}:")
    else:
        lines.append(f"Place the ir_datasets source file(s) for {dataset_id!r}:")
    for cache, urls in missing:
        src = f"  (download it from {' or '.join(urls)})" if urls else ""
        lines.append(f"  - {cache if cache is not None else 'a streamed file'}{src}")
    lines.append(f"($IR_DATASETS_HOME, default ~/.ir_datasets, is where ir_datasets keeps them.) "
                 f"On a machine with internet ir_datasets downloads them itself; set {OFFLINE_ENV}=1 to skip the network check.")
    return "\n".join(lines)


def _check_available(ds: Any, dataset_id: str, handlers: Sequence[str], name: str, split: str = "test",
                     folder: str | None = None, roots: Sequence[Path] = ()) -> None:
    missing = irds_missing(ds, handlers)
    if missing and not _online([u for _, urls in missing for u in urls]):
        raise DatasetError(_offline_message(name, split, dataset_id, missing, folder, roots))


def _to_document(doc: Any) -> Document:
    fields = doc._asdict() if hasattr(doc, "_asdict") else {"doc_id": doc[0], "text": doc[1]}
    doc_id = fields.pop("doc_id")
    text = fields.pop("text", None)
    if text is None:
        text = fields.pop("body", "") or ""
    title = fields.pop("title", None) or None
    return Document(doc_id, str(text), title, {k: v for k, v in fields.items() if isinstance(v, (str, int, float))})


class IrdsStore:
    """Documents of an ir_datasets data set through its docs store (a
    :class:`~attnsift.eval.datasets.base.DocumentStore`); nothing is read before the first use.

    Parameters
    ----------
    dataset_id : str
        The ir_datasets id.
    dataset : ir_datasets dataset, optional
        Already loaded (else loaded on first use).
    """

    def __init__(self, dataset_id: str, dataset: Any = None) -> None:
        self.dataset_id = dataset_id
        self._ds = dataset
        self._docstore: Any = None
        self.known_len: int | None = None

    @property
    def source(self) -> str:
        return f"ir_datasets:{self.dataset_id}"

    def _call(self, fn: Callable[[Any], Any]) -> Any:
        if self._ds is None:
            self._ds = irds_load(self.dataset_id)
        _check_available(self._ds, self.dataset_id, ("docs_handler",), name=self.dataset_id)
        try:
            return fn(self._ds)
        except Exception as exc:  # network / missing-file errors surface from deep inside ir_datasets
            raise DatasetError(
                f"ir_datasets could not read the documents of {self.dataset_id!r}: {exc}. "
                + _where_message(self._ds, ("docs_handler",))
            ) from exc

    def _store(self) -> Any:
        if self._docstore is None:
            self._docstore = self._call(lambda ds: ds.docs_store())
        return self._docstore

    def iter_documents(self) -> Iterator[Document]:
        for d in self._call(lambda ds: ds.docs_iter()):
            yield _to_document(d)

    def get(self, doc_id: str) -> Document | None:
        doc = self._store().get(doc_id)
        return None if doc is None else _to_document(doc)

    def count(self) -> int:
        if self.known_len is None:
            self.known_len = int(self._call(lambda ds: ds.docs_count()))
        return self.known_len

    def subset(self, wanted: set[str]) -> dict[str, Document]:
        got = self._store().get_many(list(wanted))
        return {k: _to_document(v) for k, v in got.items()}

    def fingerprint(self) -> str:
        """The ir_datasets id and the content of the docs files behind it that are on this machine
        (each hashed once, then cached by size and mtime); only the id when none is reachable."""
        if self._ds is None:
            self._ds = irds_load(self.dataset_id)
        files = irds_files(self._ds, ("docs_handler",))
        return combine("ir_datasets", self.dataset_id, folder_fingerprint(files) if files else None)


def load_irds(dataset_id: str, split: str, info: DatasetInfo, folder: str | None = None,
              roots: Sequence[Path] = ()) -> Dataset:
    """Load ``dataset_id`` through ir_datasets (queries and qrels now, documents on first use).

    Parameters
    ----------
    dataset_id : str
        The ir_datasets id (``beir/scifact/test``).
    split : str
        The split it stands for (for messages and ``Dataset.split``).
    info : DatasetInfo
        Name, relevance level and description to report.
    folder, roots
        The alias's local folder name and the data roots, named in the offline message.

    Raises
    ------
    DatasetError
        Unknown id; offline with source files missing (names them); ir_datasets failing to read.
    """
    ds = irds_load(dataset_id)
    handlers = ("queries_handler", "qrels_handler")
    _check_available(ds, dataset_id, handlers, info.name, split, folder, roots)
    try:
        qrels: dict[str, dict[str, int]] = {}
        for qrel in ds.qrels_iter():
            qrels.setdefault(str(qrel.query_id), {})[str(qrel.doc_id)] = int(qrel.relevance)
        queries: dict[str, Query] = {}
        for q in ds.queries_iter():
            qid = str(q.query_id)
            if qid in qrels:
                text = getattr(q, "text", None) or (q[1] if len(q) > 1 else "")
                queries[qid] = Query(qid, text)
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"ir_datasets could not read {dataset_id!r}: {exc}. " + _where_message(ds, handlers)) from exc
    qrels = {q: qrels[q] for q in queries}
    return Dataset(
        name=info.name,
        corpus=Corpus(IrdsStore(dataset_id, ds)),
        queries=queries,
        qrels=qrels,
        runs={},
        rel_level=info.rel_level,
        source=f"ir_datasets:{dataset_id}",
        description=info.description or f"ir_datasets {dataset_id}",
        split=split,
    )
