"""Your own documents: turn texts, mappings or files into :class:`~attnsift.types.Document` lists.

Two entry points, used by :func:`attnsift.build_index`, every retriever's ``from_corpus`` and
``attnsift index --input``:

- :func:`as_documents` takes what a Python user already holds: Documents, plain strings (ids
  ``d0, d1, ...``), mappings (``{"id" | "_id" | "doc_id", "text" | "contents", "title"}``), a dict
  ``id -> text`` or ``id -> Document``, or a corpus object with ``iter_documents()``.
- :func:`read_documents` (and the streaming :func:`iter_documents`) reads a file or folder:

  ============================  ============================================================
  ``docs.jsonl``                one JSON object per line: BEIR ``{"_id", "title", "text"}`` or
                                ``{"id", "text", "title"}`` (``doc_id`` and ``contents`` also
                                accepted); a line without an id gets ``<file stem>-<line>``
  ``docs.tsv``                  ``id<TAB>text`` or ``id<TAB>title<TAB>text``; a first row
                                ``id<TAB>text`` (or ``id<TAB>title<TAB>text``) is a header
  a folder of ``.txt``/``.md``  one document per file: id = path relative to the folder without
                                its suffix (``/`` kept, whitespace becomes ``_``), text = contents
  a BEIR folder                 its ``corpus.jsonl`` (queries and qrels are not needed)
  ============================  ============================================================

Every file is read as UTF-8; an error names the file and line (:class:`~attnsift.errors.DataFormatError`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from attnsift.errors import DataFormatError
from attnsift.io import json_object_line, utf8_lines
from attnsift.types import Document

__all__ = ["as_documents", "stream_documents", "iter_documents", "read_documents", "corpus_record", "DOCUMENT_SUFFIXES", "TEXT_SUFFIXES"]

#: file suffixes :func:`read_documents` reads as one file of many documents
DOCUMENT_SUFFIXES = (".jsonl", ".tsv")
#: suffixes of the files a folder of plain-text documents holds
TEXT_SUFFIXES = (".txt", ".md")

_ID_KEYS = ("_id", "id", "doc_id", "docid")
_TEXT_KEYS = ("text", "contents", "body")


def _from_mapping(obj: Mapping[str, Any], default_id: str, where: str) -> Document:
    """A Document from one mapping; ``where`` prefixes messages (``file:line`` or ``item 3``)."""
    doc_id = next((obj[k] for k in _ID_KEYS if obj.get(k) is not None), None)
    if doc_id is None:
        doc_id = default_id
    text = next((obj[k] for k in _TEXT_KEYS if k in obj), None)
    if text is None:
        raise DataFormatError(f"{where}: a document needs a 'text' (or 'contents') field; got keys {sorted(obj)}")
    title = obj.get("title")
    if not isinstance(text, str):
        raise DataFormatError(f"{where}: 'text' must be a string, got {type(text).__name__}")
    if title is not None and not isinstance(title, str):
        raise DataFormatError(f"{where}: 'title' must be a string, got {type(title).__name__}")
    meta = obj.get("metadata")
    try:
        return Document(str(doc_id) if isinstance(doc_id, int) else doc_id, text, title or None,
                        meta if isinstance(meta, dict) else {})
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"{where}: {exc}") from None


def _unique(docs: Iterable[tuple[str, Document]], what: str) -> Iterator[Document]:
    seen: dict[str, str] = {}
    for where, doc in docs:
        if doc.id in seen:
            raise DataFormatError(f"{where}: duplicate document id {doc.id!r} (first at {seen[doc.id]}); "
                                  f"every document id in {what} must be unique")
        seen[doc.id] = where
        yield doc


def _items(items: Any) -> Iterator[tuple[str, Document]]:
    if isinstance(items, Mapping):
        for key, value in items.items():
            where = f"key {key!r}"
            if isinstance(value, Document):
                if value.id != str(key):
                    raise ValueError(f"{where}: the Document's id is {value.id!r}; use its id as the key")
                yield where, value
            elif isinstance(value, str):
                try:
                    yield where, Document(key, value)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{where}: {exc}") from None
            elif isinstance(value, Mapping):
                yield where, _from_mapping(value, str(key), where)
            else:
                raise TypeError(f"{where}: a dict of documents maps id -> text or id -> Document, "
                                f"got {type(value).__name__}")
        return
    for i, item in enumerate(items):
        where = f"item {i}"
        if isinstance(item, Document):
            yield where, item
        elif isinstance(item, str):
            yield where, Document(f"d{i}", item)
        elif isinstance(item, Mapping):
            yield where, _from_mapping(item, f"d{i}", where)
        else:
            raise TypeError(f"{where}: documents are Documents, strings or mappings "
                            f"({{'id', 'text', 'title'}}), got {type(item).__name__}")


def stream_documents(items: Any) -> Iterator[Document]:
    """Stream what :func:`as_documents` accepts, one Document at a time (for indexing large corpora).

    Duplicate ids and wrong types raise as they are met; a corpus with ``iter_documents()`` is streamed
    from its store. An empty input yields nothing (the indexer says so).
    """
    if isinstance(items, (str, bytes, Path)):
        raise TypeError("documents must be a list of texts or Documents, not a single string or path; "
                        "wrap one text in a list, or read a file with attnsift.read_documents(path)")
    if callable(getattr(items, "iter_documents", None)):
        return iter(items.iter_documents())  # a Corpus (also a Mapping): its store knows the order
    try:
        iter(items)
    except TypeError:
        raise TypeError(f"documents must be an iterable of texts or Documents, got {type(items).__name__}") from None
    return _unique(_items(items), "the documents given")


def as_documents(items: Any) -> list[Document]:
    """Documents from what a Python user holds.

    Parameters
    ----------
    items : iterable or mapping
        Any of: :class:`Document` objects; plain strings (ids ``d0, d1, ...`` by position); mappings
        with an id (``id``, ``_id`` or ``doc_id``; default ``d<position>``), a ``text`` (or
        ``contents``) and an optional ``title``; a dict ``id -> text`` or ``id -> Document``; a corpus
        with ``iter_documents()`` (an :class:`attnsift.eval.datasets.Corpus`). Kinds may be mixed.

    Returns
    -------
    list of Document
        In the order given.

    Raises
    ------
    TypeError
        A single string or a path (use :func:`read_documents` for files), or an item of another type.
    ValueError
        No documents, duplicate ids, only empty texts, or a malformed mapping (the item is named).
    """
    docs = list(stream_documents(items))
    if not docs:
        raise ValueError("no documents given: pass at least one text or Document")
    if all(not d.text.strip() and not (d.title or "").strip() for d in docs):
        raise ValueError(f"all {len(docs)} documents have empty text; give documents with some words in them")
    return docs


# ------------------------------------------------------------------------------------------- files
def _jsonl(path: Path) -> Iterator[tuple[str, Document]]:
    for lineno, line in utf8_lines(path, "documents"):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        obj = json_object_line(line, where)
        yield where, _from_mapping(obj, f"{path.stem}-{lineno}", where)


def _tsv(path: Path) -> Iterator[tuple[str, Document]]:
    first = True
    for lineno, line in utf8_lines(path, "documents"):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        cols = line.split("\t")
        where = f"{path}:{lineno}"
        if first:
            first = False
            if [c.strip().lower() for c in cols] in (["id", "text"], ["id", "title", "text"],
                                                     ["_id", "text"], ["_id", "title", "text"]):
                continue
        if len(cols) == 2:
            doc_id, title, text = cols[0], None, cols[1]
        elif len(cols) == 3:
            doc_id, title, text = cols
        else:
            raise DataFormatError(f"{where}: expected 2 tab-separated columns (id, text) or 3 (id, title, text), "
                                  f"got {len(cols)}; a tab inside a text must be replaced by a space")
        try:
            yield where, Document(doc_id.strip(), text, title or None)
        except (TypeError, ValueError) as exc:
            raise DataFormatError(f"{where}: {exc}") from None


def _folder(path: Path) -> Iterator[tuple[str, Document]]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise DataFormatError(f"{path} holds no .txt or .md files (and no corpus.jsonl); put one document per "
                              "file there, or give a .jsonl or .tsv file")
    for f in files:
        rel = f.relative_to(path).with_suffix("").as_posix()
        doc_id = re.sub(r"\s+", "_", rel)
        try:
            raw = f.read_bytes()
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise DataFormatError(f"{f}:{line}: byte 0x{raw[exc.start]:02x} is not UTF-8 ({exc.reason}); "
                                  "documents must be UTF-8 text: re-encode the file") from None
        yield str(f), Document(doc_id, text.strip())


def _source(path: Path) -> tuple[Path, Any]:
    if path.is_dir():
        corpus = path / "corpus.jsonl"
        if corpus.is_file():
            return corpus, _jsonl
        return path, _folder
    if not path.exists():
        raise FileNotFoundError(f"no documents at {path}: give a .jsonl or .tsv file, or a folder of .txt files")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return path, _jsonl
    if suffix == ".tsv":
        return path, _tsv
    if suffix in TEXT_SUFFIXES:
        raise ValueError(f"{path} is a single text file; give the folder that holds it (one document per file), "
                         "or a .jsonl / .tsv file of many documents")
    raise ValueError(f"cannot read documents from {path} (suffix {suffix or 'none'!r}): give a .jsonl or .tsv file, "
                     "a folder of .txt/.md files or a BEIR folder with corpus.jsonl")


def check_documents_path(path: str | Path) -> Path:
    """Check that ``path`` names something :func:`read_documents` can read, without reading it.

    Returns
    -------
    Path
        The file actually read (``corpus.jsonl`` of a BEIR folder, or the path itself).

    Raises
    ------
    FileNotFoundError, ValueError
        Nothing there, or a kind of file that is not accepted.
    """
    return _source(Path(path))[0]


def iter_documents(path: str | Path) -> Iterator[Document]:
    """Stream the documents of a file or folder (see the module docstring for the formats).

    Duplicate ids raise :class:`DataFormatError` naming both places; the path is checked at the call.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ValueError
        A file of another kind.
    DataFormatError
        A malformed line or file (``file:line`` in the message), bytes that are not UTF-8.
    """
    source, reader = _source(Path(path))
    return _unique(reader(source), str(source))


def read_documents(path: str | Path) -> list[Document]:
    """Read every document of a ``.jsonl`` / ``.tsv`` file, a folder of ``.txt``/``.md`` files, or a BEIR folder.

    Parameters
    ----------
    path : str or Path
        See the module docstring for the formats; a JSONL line without an id gets ``<stem>-<line>``.

    Returns
    -------
    list of Document
        In file order (folder: sorted by relative path).

    Raises
    ------
    FileNotFoundError, ValueError
        Nothing at ``path``, or a kind of file that is not accepted.
    DataFormatError
        A malformed or non-UTF-8 line (file and line named), a duplicate id, or no documents at all.
    """
    source, reader = _source(Path(path))
    docs = list(_unique(reader(source), str(source)))
    if not docs:
        raise DataFormatError(f"{source} holds no documents (it is empty); add one document per line")
    return docs


def corpus_record(documents: Any, stream: bool = False) -> tuple[Any, str, str | None]:
    """The documents of what :func:`attnsift.build_index` was given, their fingerprint and data set name.

    Parameters
    ----------
    documents : path, Dataset, Corpus, or anything :func:`as_documents` takes
    stream : bool
        For a retriever that streams its corpus into a store on disk (dense, late interaction): a path
        comes back as a :class:`~pathlib.Path` and a Dataset or Corpus as its Corpus, fingerprinted
        without holding the documents; anything else comes back as a list, as without ``stream``.

    Returns
    -------
    (list of Document (or, with ``stream``, a Path or Corpus), str, str or None)
        The fingerprint is what :meth:`attnsift.eval.datasets.Corpus.fingerprint` gives for the same
        corpus (a ``.jsonl`` file's hash, else the documents' hash), so a data set loaded from the same
        folder is recognised as the index's corpus.
    """
    from attnsift.fingerprint import documents_fingerprint, file_fingerprint

    if isinstance(documents, (str, Path)):
        source = check_documents_path(documents)
        if stream:  # read once here for the fingerprint (a .jsonl: the file's hash), once by the retriever
            fp = file_fingerprint(source) if source.suffix == ".jsonl" else documents_fingerprint(iter_documents(source))
            return Path(documents), fp, None
        docs = read_documents(documents)
        return docs, (file_fingerprint(source) if source.suffix == ".jsonl" else documents_fingerprint(docs)), None
    dataset = None
    if hasattr(documents, "corpus") and hasattr(documents, "queries"):  # a Dataset: index its corpus
        dataset, documents = getattr(documents, "name", None), documents.corpus
    own = getattr(documents, "fingerprint", None)
    if stream and callable(getattr(documents, "iter_documents", None)) and callable(own):
        return documents, own(), dataset
    docs = as_documents(documents)
    return docs, (own() if callable(own) else documents_fingerprint(docs)), dataset
