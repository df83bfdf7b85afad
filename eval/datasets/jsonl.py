"""JSONL parsing for BEIR-style files: one JSON object per line, every error names the file and line.

Also :class:`JsonlStore`, the document store behind a ``corpus.jsonl`` (streamed in file order;
loaded whole on the first random access).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Iterable, Iterator

from attnsift.errors import DataFormatError
from attnsift.fingerprint import file_fingerprint
from attnsift.io import json_object_line, utf8_lines
from attnsift.types import Document, Query

__all__ = ["load_json_line", "parse_doc", "read_queries", "count_lines", "duplicate_error", "JsonlStore"]

logger = logging.getLogger(__name__)

# The id of a BEIR line without a JSON parse, to skip unwanted lines fast in JsonlStore.subset.
_ID_RE = re.compile(r'"_id"\s*:\s*"([^"\\]*)"')


def load_json_line(line: str, path: Path, lineno: int) -> dict:
    """Parse one line as a JSON object.

    Raises
    ------
    DataFormatError
        Not valid JSON, or not an object (``path:lineno`` in the message).
    """
    return json_object_line(line, f"{path}:{lineno}")


def parse_doc(line: str, path: Path, lineno: int) -> Document:
    """A :class:`~attnsift.types.Document` from a BEIR corpus line (``_id``, ``text``, optional ``title``,
    ``metadata``).

    Raises
    ------
    DataFormatError
        Malformed JSON, a missing key or a value of the wrong type (``path:lineno`` in the message).
    """
    obj = load_json_line(line, path, lineno)
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


def _first_line_of(path: Path, doc_id: str) -> int | None:
    """Line number of the first document with ``doc_id`` (only used to write an error message)."""
    for lineno, line in utf8_lines(path, "corpus"):
        if line.strip():
            try:
                if str(json.loads(line).get("_id")) == doc_id:
                    return lineno
            except (json.JSONDecodeError, AttributeError):
                continue
    return None


def duplicate_error(path: Path, lineno: int, doc_id: str) -> DataFormatError:
    """The error for a document id seen twice, naming both lines."""
    first = _first_line_of(path, doc_id)
    where = f" (first at line {first})" if first is not None and first != lineno else ""
    return DataFormatError(
        f"{path}:{lineno}: duplicate document id {doc_id!r}{where}; every document id must be unique, "
        "remove or rename the duplicate"
    )


def count_lines(path: Path) -> int:
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
    path : str or Path
        The ``queries.jsonl`` file.
    keep : iterable of str, optional
        Keep only these query ids (e.g. those with qrels in the split); others are not validated
        beyond their JSON form.

    Returns
    -------
    dict
        ``{query_id: Query}`` in file order.

    Raises
    ------
    DataFormatError
        Malformed JSON, a missing ``_id`` or ``text``, an empty text or a duplicate id (file and line).
    """
    path = Path(path)
    keep_set = set(keep) if keep is not None else None
    out: dict[str, Query] = {}
    lines: dict[str, int] = {}
    for lineno, line in utf8_lines(path, "queries"):
        if not line.strip():
            continue
        obj = load_json_line(line, path, lineno)
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


class JsonlStore:
    """Documents of a BEIR ``corpus.jsonl`` (a :class:`~attnsift.eval.datasets.base.DocumentStore`).

    Streams in file order; the first random access (:meth:`get`) loads the whole file into memory
    (fine for the local sets), after which everything is served from memory. Duplicate ids raise
    :class:`~attnsift.errors.DataFormatError` naming the file and both lines.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._docs: dict[str, Document] | None = None
        self.known_len: int | None = None
        self._subset_calls = 0

    @property
    def source(self) -> str:
        return f"local:{self.path}"

    def fingerprint(self) -> str:
        """The sha256 of ``corpus.jsonl`` (cached by size and mtime)."""
        return file_fingerprint(self.path)

    @property
    def loaded(self) -> bool:
        """Whether the whole file is held in memory (after the first random access)."""
        return self._docs is not None

    def iter_documents(self) -> Iterator[Document]:
        if self._docs is not None:
            yield from self._docs.values()
            return
        seen: set[str] = set()
        n = 0
        for lineno, line in utf8_lines(self.path, "corpus"):
            if not line.strip():
                continue
            doc = parse_doc(line, self.path, lineno)
            if doc.id in seen:
                raise duplicate_error(self.path, lineno, doc.id)
            seen.add(doc.id)
            n += 1
            yield doc
        self.known_len = n

    def _load(self) -> dict[str, Document]:
        if self._docs is None:
            logger.info("loading %s into memory", self.path)
            self._docs = {d.id: d for d in self.iter_documents()}
            self.known_len = len(self._docs)
        return self._docs

    def get(self, doc_id: str) -> Document | None:
        return self._load().get(doc_id)

    def count(self) -> int:
        if self.known_len is None:
            self.known_len = count_lines(self.path)
        return self.known_len

    def subset(self, wanted: set[str]) -> dict[str, Document]:
        # One call (a provided run's texts) streams the file; a second (a retriever reading each query's
        # candidates) loads it once, rather than rescanning the whole file for every query.
        self._subset_calls += 1
        if self._docs is not None or self._subset_calls > 1:
            docs = self._load()
            return {i: docs[i] for i in wanted if i in docs}
        out: dict[str, Document] = {}
        for lineno, line in utf8_lines(self.path, "corpus"):
            m = _ID_RE.search(line)
            # The regex sees only plain ids; any other line is parsed in full.
            if m is not None and m.group(1) not in wanted:
                continue
            if not line.strip():
                continue
            doc = parse_doc(line, self.path, lineno)
            if doc.id not in wanted:
                continue
            if doc.id in out:
                raise duplicate_error(self.path, lineno, doc.id)
            out[doc.id] = doc
        if len(out) < len(wanted):
            logger.info("%s: %d of %d requested ids are not in the corpus", self.path, len(wanted) - len(out), len(wanted))
        return out
