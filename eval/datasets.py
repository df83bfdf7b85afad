"""Evaluation data sets: corpus, queries, relevance judgements and provided first-stage runs.

A data set comes from one of:

1. a folder in BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``, optional
   ``runs/*.trec``), given as a path, or by its folder name under ``data_dir`` / ``$ATTNSIFT_DATA``;
2. an alias (``scifact``, ``nfcorpus``, ``dl19``, ``msmarco``) that resolves to its local folder when
   present, else to its ir_datasets id;
3. any ir_datasets id (``beir/scifact/test``), loaded through ir_datasets (queries and qrels read at
   once, documents through its docs store on first use).

Offline, when neither the local folder nor the ir_datasets source files exist, :func:`load_dataset`
raises :class:`~attnsift.errors.DatasetError` at once (no download attempt hangs) saying exactly which
files to place where.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence
from urllib.parse import urlparse

from attnsift.errors import DataFormatError, DatasetError
from attnsift.types import Document, Query, Run, check_k

__all__ = ["Dataset", "Corpus", "load_dataset", "list_datasets", "read_queries", "ALIASES", "DATA_ENV"]

logger = logging.getLogger(__name__)

DATA_ENV = "ATTNSIFT_DATA"
OFFLINE_ENV = "ATTNSIFT_OFFLINE"


@dataclass(frozen=True)
class _Alias:
    name: str
    folder: str
    irds: Mapping[str, str]  # split -> ir_datasets id
    rel_level: int
    description: str
    run_aliases: Mapping[str, str] = field(default_factory=dict)


ALIASES: dict[str, _Alias] = {
    a.name: a
    for a in (
        _Alias("scifact", "scifact", {"test": "beir/scifact/test", "train": "beir/scifact/train"}, 1,
               "BEIR SciFact: scientific claims vs. abstracts (5,183 docs, 300 test queries)"),
        _Alias("nfcorpus", "nfcorpus",
               {"test": "beir/nfcorpus/test", "dev": "beir/nfcorpus/dev", "train": "beir/nfcorpus/train"}, 1,
               "BEIR NFCorpus: nutrition questions vs. medical abstracts (3,633 docs, 323 test queries, graded 1-2)"),
        _Alias("dl19", "trec-dl19-passage", {"test": "msmarco-passage/trec-dl-2019/judged"}, 2,
               "TREC DL 2019 passage: 43 judged queries, grades 0-3 (relevant >= 2), BM25 and SPLADE++ top-100 runs",
               {"bm25": "bm25_flat", "splade": "splade_pp_ed"}),
        _Alias("msmarco", "msmarco-passage-dev-small",
               {"test": "msmarco-passage/dev/small", "dev": "msmarco-passage/dev/small"}, 1,
               "MS MARCO passage dev/small: 6,980 queries over 8.8M passages (binary judgements)"),
    )
}


# --------------------------------------------------------------------------------------------------
# JSONL parsing
# --------------------------------------------------------------------------------------------------

def _load_json_line(line: str, path: Path, lineno: int) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
    return obj


def _parse_doc(line: str, path: Path, lineno: int) -> Document:
    obj = _load_json_line(line, path, lineno)
    for key in ("_id", "text"):
        if key not in obj:
            raise DataFormatError(
                f"{path}:{lineno}: a corpus line needs the keys '_id' and 'text' (BEIR layout); '{key}' is missing"
            )
    text, title, meta = obj["text"], obj.get("title"), obj.get("metadata")
    if not isinstance(text, str):
        raise DataFormatError(f"{path}:{lineno}: 'text' must be a string, got {type(text).__name__}")
    if title is not None and not isinstance(title, str):
        raise DataFormatError(f"{path}:{lineno}: 'title' must be a string, got {type(title).__name__}")
    try:
        return Document(obj["_id"], text, title or None, meta if isinstance(meta, dict) else {})
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"{path}:{lineno}: {exc}") from None


# The id of a BEIR line without a JSON parse, to skip unwanted lines fast in Corpus.subset.
_ID_RE = re.compile(r'"_id"\s*:\s*"([^"\\]*)"')


def _first_line_of(path: Path, doc_id: str) -> int | None:
    """Line number of the first document with ``doc_id`` (only used to write an error message)."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    if str(json.loads(line).get("_id")) == doc_id:
                        return lineno
                except (json.JSONDecodeError, AttributeError):
                    continue
    return None


def _duplicate_error(path: Path, lineno: int, doc_id: str) -> DataFormatError:
    first = _first_line_of(path, doc_id)
    where = f" (first at line {first})" if first is not None and first != lineno else ""
    return DataFormatError(
        f"{path}:{lineno}: duplicate document id {doc_id!r}{where}; every document id must be unique, "
        "remove or rename the duplicate"
    )


def _count_lines(path: Path) -> int:
    """Non-empty lines, counted in binary chunks (cheap even for large files)."""
    n = 0
    last = b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        n += 1
    # blank lines are rare; subtract them only for small files where it is cheap to check
    if path.stat().st_size < (64 << 20):
        with open(path, "rb") as fh:
            n -= sum(1 for line in fh if not line.strip())
    return n


def read_queries(path: str | Path, keep: Iterable[str] | None = None) -> dict[str, Query]:
    """Read a BEIR ``queries.jsonl`` in file order.

    Parameters
    ----------
    keep : iterable of str, optional
        Keep only these query ids (e.g. those with qrels in the split); others are not validated
        beyond their JSON form.

    Raises
    ------
    DataFormatError
        Malformed JSON, a missing ``_id`` or ``text``, an empty text or a duplicate id (file and line).
    """
    path = Path(path)
    keep_set = set(keep) if keep is not None else None
    out: dict[str, Query] = {}
    lines: dict[str, int] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            obj = _load_json_line(line, path, lineno)
            for key in ("_id", "text"):
                if key not in obj:
                    raise DataFormatError(f"{path}:{lineno}: a query line needs the keys '_id' and 'text'; '{key}' is missing")
            qid = str(obj["_id"])
            if keep_set is not None and qid not in keep_set:
                continue
            text = obj["text"]
            if not isinstance(text, str) or not text.strip():
                raise DataFormatError(f"{path}:{lineno}: query {qid!r} has empty text; every query needs some words")
            if qid in out:
                raise DataFormatError(f"{path}:{lineno}: duplicate query id {qid!r} (first at line {lines[qid]})")
            try:
                out[qid] = Query(qid, text)
            except (TypeError, ValueError) as exc:
                raise DataFormatError(f"{path}:{lineno}: {exc}") from None
            lines[qid] = lineno
    return out


# --------------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------------

def _irds_doc(doc: Any) -> Document:
    fields = doc._asdict() if hasattr(doc, "_asdict") else {"doc_id": doc[0], "text": doc[1]}
    doc_id = fields.pop("doc_id")
    text = fields.pop("text", None)
    if text is None:
        text = fields.pop("body", "") or ""
    title = fields.pop("title", None) or None
    return Document(doc_id, str(text), title, {k: v for k, v in fields.items() if isinstance(v, (str, int, float))})


class Corpus(Mapping[str, Document]):
    """Documents by id, backed by a BEIR ``corpus.jsonl``, an ir_datasets docs store or a list.

    Use :meth:`from_jsonl`, :meth:`from_ir_datasets` or :meth:`from_documents`.

    - :meth:`iter_documents` streams documents without holding them all (file order);
    - ``corpus[doc_id]`` / ``get`` load the whole JSONL into memory on first random access (fine for
      the local sets); an ir_datasets corpus uses its docs store instead;
    - :meth:`subset` streams and keeps only the ids asked for (to rerank a run over a large
      collection without loading it).
    """

    def __init__(self, *, path: Path | None = None, documents: dict[str, Document] | None = None,
                 irds_id: str | None = None, irds_dataset: Any = None) -> None:
        if sum(x is not None for x in (path, documents, irds_id)) != 1:
            raise TypeError("build a Corpus with Corpus.from_jsonl, Corpus.from_documents or Corpus.from_ir_datasets")
        self._path = Path(path) if path is not None else None
        self._docs = documents
        self._irds_id = irds_id
        self._irds = irds_dataset
        self._docstore: Any = None
        self._len: int | None = len(documents) if documents is not None else None

    # construction --------------------------------------------------------------------------------
    @classmethod
    def from_jsonl(cls, path: str | Path) -> "Corpus":
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"corpus file {path} does not exist; a BEIR corpus.jsonl with one "
                               '{"_id", "title", "text"} object per line is expected there')
        return cls(path=path)

    @classmethod
    def from_documents(cls, docs: Iterable[Document]) -> "Corpus":
        out: dict[str, Document] = {}
        for i, d in enumerate(docs):
            if not isinstance(d, Document):
                raise TypeError(f"Corpus.from_documents takes Document objects, got {type(d).__name__} at position {i}")
            if d.id in out:
                raise DataFormatError(f"duplicate document id {d.id!r} at position {i} of the documents given")
            out[d.id] = d
        return cls(documents=out)

    @classmethod
    def from_ir_datasets(cls, dataset_id: str, dataset: Any = None) -> "Corpus":
        return cls(irds_id=dataset_id, irds_dataset=dataset)

    # description ---------------------------------------------------------------------------------
    @property
    def source(self) -> str:
        if self._path is not None:
            return f"local:{self._path}"
        if self._irds_id is not None:
            return f"ir_datasets:{self._irds_id}"
        return "memory"

    def __repr__(self) -> str:
        n = self._len if self._len is not None else "?"
        return f"Corpus({self.source}, docs={n})"

    # ir_datasets ---------------------------------------------------------------------------------
    def _irds_ds(self) -> Any:
        if self._irds is None:
            self._irds = _irds_load(self._irds_id)
        return self._irds

    def _irds_call(self, fn: Any) -> Any:
        ds = self._irds_ds()
        _irds_check_available(ds, self._irds_id, ("docs_handler",), name=self._irds_id)
        try:
            return fn(ds)
        except Exception as exc:  # network / missing-file errors surface from deep inside ir_datasets
            raise DatasetError(
                f"ir_datasets could not read the documents of {self._irds_id!r}: {exc}. "
                + _irds_where_message(ds, ("docs_handler",))
            ) from exc

    def _store(self) -> Any:
        if self._docstore is None:
            self._docstore = self._irds_call(lambda ds: ds.docs_store())
        return self._docstore

    # streaming -----------------------------------------------------------------------------------
    def iter_documents(self) -> Iterator[Document]:
        """Stream every document (file order). Duplicate ids raise DataFormatError (file, line, id)."""
        if self._docs is not None:
            yield from self._docs.values()
            return
        if self._irds_id is not None:
            for d in self._irds_call(lambda ds: ds.docs_iter()):
                yield _irds_doc(d)
            return
        assert self._path is not None
        seen: set[str] = set()
        n = 0
        with open(self._path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                doc = _parse_doc(line, self._path, lineno)
                if doc.id in seen:
                    raise _duplicate_error(self._path, lineno, doc.id)
                seen.add(doc.id)
                n += 1
                yield doc
        self._len = n

    def _load(self) -> dict[str, Document]:
        if self._docs is None:
            if self._path is None:
                raise RuntimeError("an ir_datasets corpus is read through its docs store, not loaded whole")
            logger.info("loading %s into memory", self._path)
            self._docs = {d.id: d for d in self.iter_documents()}
            self._len = len(self._docs)
        return self._docs

    # Mapping -------------------------------------------------------------------------------------
    def __getitem__(self, doc_id: str) -> Document:
        if self._irds_id is not None:
            doc = self._store().get(doc_id)
            if doc is None:
                raise KeyError(doc_id)
            return _irds_doc(doc)
        return self._load()[doc_id]

    def __contains__(self, doc_id: object) -> bool:
        try:
            self[doc_id]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        if self._docs is not None:
            return iter(self._docs)
        return (d.id for d in self.iter_documents())

    def __len__(self) -> int:
        if self._len is None:
            if self._irds_id is not None:
                self._len = int(self._irds_call(lambda ds: ds.docs_count()))
            else:
                assert self._path is not None
                self._len = _count_lines(self._path)
        return self._len

    def subset(self, ids: Iterable[str]) -> dict[str, Document]:
        """The documents whose ids are in ``ids``, streamed (the whole corpus is never held).

        Ids not in the corpus are left out of the result (compare lengths to detect them); the
        result follows corpus order.
        """
        if isinstance(ids, str):
            raise TypeError("Corpus.subset takes an iterable of document ids, not a single string")
        wanted = {str(i) for i in ids}
        if self._docs is not None:
            return {i: d for i, d in self._docs.items() if i in wanted}
        if self._irds_id is not None:
            got = self._store().get_many(list(wanted))
            return {k: _irds_doc(v) for k, v in got.items()}
        assert self._path is not None
        out: dict[str, Document] = {}
        with open(self._path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                m = _ID_RE.search(line)
                # The regex sees only plain ids; any other line is parsed in full.
                if m is not None and m.group(1) not in wanted:
                    continue
                if not line.strip():
                    continue
                doc = _parse_doc(line, self._path, lineno)
                if doc.id not in wanted:
                    continue
                if doc.id in out:
                    raise _duplicate_error(self._path, lineno, doc.id)
                out[doc.id] = doc
        if len(out) < len(wanted):
            logger.info("%s: %d of %d requested ids are not in the corpus", self._path, len(wanted) - len(out), len(wanted))
        return out


# --------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------

@dataclass
class Dataset:
    """An evaluation data set.

    Attributes
    ----------
    name : str
        Alias, folder name or ir_datasets id.
    corpus : Corpus
    queries : dict
        ``{query_id: Query}`` in file order (only queries with judgements in this split).
    qrels : dict
        ``{query_id: {doc_id: grade}}``.
    runs : dict
        Provided first-stage runs ``{run name: path}``; the name is the file name before its first '.'.
    rel_level : int
        Minimum grade counted relevant by binary measures (2 for TREC DL, else 1).
    source : str
        ``"local:/path"`` or ``"ir_datasets:<id>"``.
    description : str
    split : str
    run_aliases : dict
        Short run names (``"bm25" -> "bm25_flat"``) accepted by :meth:`load_run`.
    """

    name: str
    corpus: Corpus
    queries: dict[str, Query]
    qrels: dict[str, dict[str, int]]
    runs: dict[str, Path] = field(default_factory=dict)
    rel_level: int = 1
    source: str = ""
    description: str = ""
    split: str = "test"
    run_aliases: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, split={self.split!r}, queries={len(self.queries)}, "
                f"runs={sorted(self.runs)}, rel_level={self.rel_level}, source={self.source!r})")

    def load_run(self, name: str) -> Run:
        """Read a provided run (``runs`` name or short alias) with this data set's queries attached.

        Lines for queries not in this data set (e.g. after :meth:`subset`) are skipped.
        """
        from attnsift.trec import read_run

        key = self.run_aliases.get(name, name)
        if key not in self.runs:
            avail = sorted(self.runs) + [f"{a} (= {t})" for a, t in sorted(self.run_aliases.items()) if t in self.runs]
            raise ValueError(
                f"data set {self.name!r} has no provided run {name!r}; available: {', '.join(avail) or 'none'}"
            )
        return read_run(self.runs[key], queries=self.queries, name=key, skip_unknown=True)

    def subset(self, query_ids: Iterable[str] | int | None = None, *, max_queries: int | None = None) -> "Dataset":
        """A data set restricted to some queries (corpus and runs shared).

        Parameters
        ----------
        query_ids : iterable of str, or int
            The query ids to keep (kept in this data set's query order), or an int meaning
            ``max_queries``.
        max_queries : int
            Keep the first N queries in file order (deterministic).
        """
        if isinstance(query_ids, int) and not isinstance(query_ids, bool):
            query_ids, max_queries = None, query_ids
        if (query_ids is None) == (max_queries is None):
            raise ValueError("give either query_ids (an iterable of ids) or max_queries (a positive integer), not both")
        if max_queries is not None:
            max_queries = check_k(max_queries, "max_queries")
            keep = list(self.queries)[:max_queries]
        else:
            if isinstance(query_ids, str):
                raise TypeError("query_ids must be an iterable of query ids, not a single string")
            wanted = [str(q) for q in query_ids]  # type: ignore[union-attr]
            unknown = [q for q in wanted if q not in self.queries]
            if unknown:
                raise ValueError(
                    f"query ids {unknown[:5]} are not in data set {self.name!r} (split {self.split!r}); "
                    f"it has {len(self.queries)} queries, e.g. {list(self.queries)[:3]}"
                )
            wanted_set = set(wanted)
            keep = [q for q in self.queries if q in wanted_set]
        return dataclasses.replace(
            self,
            queries={q: self.queries[q] for q in keep},
            qrels={q: dict(self.qrels[q]) for q in keep if q in self.qrels},
            runs=dict(self.runs),
            run_aliases=dict(self.run_aliases),
            description=f"{self.description} [subset: {len(keep)} of {len(self.queries)} queries]",
        )


# --------------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------------

def _data_roots(data_dir: str | Path | None) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    env = os.environ.get(DATA_ENV)
    return [Path(env).expanduser()] if env else []


def _is_beir_folder(p: Path) -> bool:
    return p.is_dir() and (p / "corpus.jsonl").is_file()


def _local_folders(roots: Sequence[Path]) -> list[Path]:
    out = []
    for r in roots:
        if r.is_dir():
            out += sorted(p for p in r.iterdir() if _is_beir_folder(p))
    return out


def _default_rel_level(name: str) -> int:
    return 2 if re.search(r"trec-dl|\bdl(19|20|21|22|23)\b|dl-20", name.lower()) else 1


def _load_local(path: Path, split: str, name: str, rel_level: int, description: str,
                run_aliases: Mapping[str, str]) -> Dataset:
    from attnsift.trec import read_qrels

    missing = [f for f in ("corpus.jsonl", "queries.jsonl") if not (path / f).is_file()]
    qrels_path = path / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        missing.append(f"qrels/{split}.tsv")
    if missing:
        splits = sorted(p.stem for p in (path / "qrels").glob("*.tsv")) if (path / "qrels").is_dir() else []
        raise DatasetError(
            f"data set folder {path} is missing {', '.join(missing)}; a BEIR-layout folder needs corpus.jsonl, "
            f"queries.jsonl and qrels/<split>.tsv (splits present: {', '.join(splits) or 'none'})"
        )
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
        name=name,
        corpus=Corpus.from_jsonl(path / "corpus.jsonl"),
        queries=queries,
        qrels=qrels,
        runs=runs,
        rel_level=rel_level,
        source=f"local:{path}",
        description=description or f"BEIR-layout folder {path.name}",
        split=split,
        run_aliases={a: t for a, t in run_aliases.items() if t in runs},
    )


# ir_datasets ----------------------------------------------------------------------------------------

def _irds_load(dataset_id: str) -> Any:
    import ir_datasets

    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        raise DatasetError(
            f"{dataset_id!r} is not an ir_datasets id (see https://ir-datasets.com); known aliases: "
            f"{', '.join(ALIASES)}"
        ) from None


def _irds_sources(obj: Any, out: list[tuple[Path | None, list[str]]], seen: set[int], depth: int = 0,
                  outer: Path | None = None) -> None:
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


def _irds_missing(ds: Any, handlers: Sequence[str]) -> list[tuple[Path | None, list[str]]]:
    out: list[tuple[Path | None, list[str]]] = []
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


def _irds_where_message(ds: Any, handlers: Sequence[str]) -> str:
    missing = _irds_missing(ds, handlers)
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


def _offline_message(name: str, split: str, dataset_id: str, missing: Sequence[tuple[Path | None, list[str]]],
                     folder: str | None, roots: Sequence[Path]) -> str:
    lines = [f"data set {name!r} (split {split!r}) is not available on this machine and its download hosts cannot be reached."]
    if folder is not None:
        root = str(roots[0]) if roots else "/path/to/data"
        lines.append(
            f"Either place the BEIR-layout files at {root}/{folder}/ (corpus.jsonl, queries.jsonl, qrels/{split}.tsv"
            + (", runs/*.trec" if name == "dl19" else "")
            + f") and set {DATA_ENV}={root} (or pass data_dir=...),"
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


def _irds_check_available(ds: Any, dataset_id: str, handlers: Sequence[str], name: str, split: str = "test",
                          folder: str | None = None, roots: Sequence[Path] = ()) -> None:
    missing = _irds_missing(ds, handlers)
    if missing and not _online([u for _, urls in missing for u in urls]):
        raise DatasetError(_offline_message(name, split, dataset_id, missing, folder, roots))


def _load_irds(dataset_id: str, name: str, split: str, rel_level: int | None, description: str,
               folder: str | None, roots: Sequence[Path]) -> Dataset:
    ds = _irds_load(dataset_id)
    _irds_check_available(ds, dataset_id, ("queries_handler", "qrels_handler"), name, split, folder, roots)
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
        raise DatasetError(
            f"ir_datasets could not read {dataset_id!r}: {exc}. "
            + _irds_where_message(ds, ("queries_handler", "qrels_handler"))
        ) from exc
    qrels = {q: qrels[q] for q in queries}
    return Dataset(
        name=name,
        corpus=Corpus.from_ir_datasets(dataset_id, ds),
        queries=queries,
        qrels=qrels,
        runs={},
        rel_level=rel_level if rel_level is not None else _default_rel_level(dataset_id),
        source=f"ir_datasets:{dataset_id}",
        description=description or f"ir_datasets {dataset_id}",
        split=split,
    )


def load_dataset(name: str, split: str = "test", data_dir: str | Path | None = None) -> Dataset:
    """Load an evaluation data set.

    Parameters
    ----------
    name : str
        A path to a BEIR-layout folder; a folder name under ``data_dir`` (default ``$ATTNSIFT_DATA``);
        an alias (``scifact``, ``nfcorpus``, ``dl19``, ``msmarco``); or an ir_datasets id
        (``beir/scifact/test``). Aliases use the local folder when present, else ir_datasets.
    split : str
        Qrels split (``qrels/<split>.tsv``); nfcorpus also has ``dev`` and ``train``.
    data_dir : str or Path, optional
        Folder holding data set folders; overrides ``$ATTNSIFT_DATA``.

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
        return _load_local(p, split, p.name, _default_rel_level(p.name), "", {})

    if alias is None:
        for r in roots:
            if (r / name).is_dir():
                return _load_local(r / name, split, name, _default_rel_level(name), "", {})

    if alias is not None:
        for r in roots:
            if (r / alias.folder).is_dir():
                return _load_local(r / alias.folder, split, alias.name, alias.rel_level, alias.description, alias.run_aliases)
        dataset_id = alias.irds.get(split)
        if dataset_id is None:
            raise DatasetError(
                f"data set {alias.name!r} has no split {split!r} in ir_datasets; available: {', '.join(alias.irds)}"
            )
        return _load_irds(dataset_id, alias.name, split, alias.rel_level, alias.description, alias.folder, roots)

    if "/" in name and not p.exists():
        return _load_irds(name, name, split, None, "", None, roots)

    local = [f.name for f in _local_folders(roots)]
    where = f" under {', '.join(map(str, roots))}" if roots else f" (set {DATA_ENV} to a folder of data sets)"
    raise DatasetError(
        f"unknown data set {name!r}. Known aliases: {', '.join(ALIASES)}; local folders{where}: "
        f"{', '.join(local) or 'none'}; or give a path to a BEIR-layout folder or an ir_datasets id such as 'beir/scifact/test'."
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

    def local_row(name: str, path: Path, description: str) -> dict[str, Any]:
        used.add(path.resolve())
        qrels_path = path / "qrels" / "test.tsv"
        nq = None
        if qrels_path.is_file():
            from attnsift.trec import read_qrels

            try:
                nq = len(read_qrels(qrels_path))
            except (DataFormatError, OSError):
                nq = None
        return {
            "name": name,
            "path": str(path),
            "available": _is_beir_folder(path) and (path / "queries.jsonl").is_file() and qrels_path.is_file(),
            "docs": _count_lines(path / "corpus.jsonl") if (path / "corpus.jsonl").is_file() else None,
            "queries": nq,
            "source": f"local:{path}",
            "description": description or f"BEIR-layout folder {path.name}",
        }

    for alias in ALIASES.values():
        folder = next((r / alias.folder for r in roots if (r / alias.folder).is_dir()), None)
        if folder is not None:
            rows.append(local_row(alias.name, folder, alias.description))
            continue
        dataset_id = alias.irds["test"]
        available = False
        try:
            ds = _irds_load(dataset_id)
            available = not _irds_missing(ds, ("queries_handler", "qrels_handler", "docs_handler"))
        except Exception as exc:  # listing must not fail because ir_datasets misbehaves
            logger.debug("ir_datasets check of %s failed: %s", dataset_id, exc)
        rows.append({"name": alias.name, "path": None, "available": available, "docs": None, "queries": None,
                     "source": f"ir_datasets:{dataset_id}", "description": alias.description})
    for folder in _local_folders(roots):
        if folder.resolve() not in used:
            rows.append(local_row(folder.name, folder, ""))
    return rows
