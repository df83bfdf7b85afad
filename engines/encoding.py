"""Corpus encoding on an engine: the document chunks of a dense index encoded by Ray workers.

:func:`engine_encoder` wraps a built :class:`~attnsift.retrieval.encoders.Encoder` so that the
document chunks of a planned corpus are encoded on the engine's actors while everything else (the
queries, the probe vector, the index manifest, the encoding cache) stays as it is. The index build
(``DenseRetriever.from_corpus`` through :func:`attnsift.registry.build_index`) does not change: it asks
the encoder for one chunk of 512 documents after another (:func:`~attnsift.retrieval.encoding_cache.
encode_corpus_cached`); the first request starts the encoding of that chunk and every later one of the
plan on the engine, and each request then takes its chunk's vectors as they arrive. A worker encodes
a chunk with the same code and the same chunking as the local build, so the vectors, the cache files
and the index are those of a local build (on the same device and precision), and a stopped build
resumes from the cached chunks like a local one.

Where the texts come from. A corpus in a file the workers can read (a BEIR ``corpus.jsonl``, an MS
MARCO ``collection.tsv``, a ``docs.jsonl``/``docs.tsv``, a folder of ``.txt`` files: what
``index --dataset`` and ``index --input`` name) is planned as :class:`Shard` descriptors (the file, its
fingerprint, a byte range and the sha256 of the chunk's texts), found in one streamed pass here that
keeps nothing but the descriptors; each worker reads its chunk's texts from its own copy of the file
(:func:`read_shard`), checks the fingerprint and the texts' hash, and refuses in one line a file it
cannot read ("put the data on every node or use --engine local"). Texts in memory (a list of
Documents or strings, an ir_datasets corpus) travel from here to the workers, chunk by chunk.
"""
from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

log = logging.getLogger(__name__)

__all__ = ["engine_encoder", "shard_source", "plan_shards", "read_shard", "ShardSource", "Shard", "CHUNK"]

#: documents per chunk of the encoding cache (``encode_corpus_cached``'s default)
CHUNK = 512
#: the file kinds a worker reads itself
KINDS = ("beir", "jsonl", "tsv", "msmarco", "folder")
_ELSEWHERE = "put the data on every node (at the same path) or use --engine local"
_TSV_HEADERS = (["id", "text"], ["id", "title", "text"], ["_id", "text"], ["_id", "title", "text"])


def _key(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        _feed(h, t)
    return h.hexdigest()


def _feed(h: Any, text: str) -> None:
    h.update(text.encode("utf-8", "surrogatepass"))
    h.update(b"\0")


# ------------------------------------------------------------------------------------------ shards
@dataclass(frozen=True)
class ShardSource:
    """A corpus on disk that workers read themselves.

    Attributes
    ----------
    kind : str
        ``beir`` (a data set's ``corpus.jsonl``), ``jsonl`` / ``tsv`` (``index --input`` files),
        ``msmarco`` (``collection.tsv``) or ``folder`` (one ``.txt``/``.md`` file per document).
    path : str
        The absolute path: the same on every node.
    fingerprint : str
        The driver's content hash of it (a worker's copy must match).
    """

    kind: str
    path: str
    fingerprint: str


@dataclass(frozen=True)
class Shard:
    """One chunk of a :class:`ShardSource`: what a worker needs to read the chunk's texts.

    ``begin``/``end`` are byte offsets of the chunk's lines (``folder``: ``files`` lists its files,
    relative to the folder); ``line`` is the number of the line at ``begin`` (for messages);
    ``count`` the documents in it; ``key`` the sha256 of their texts (:func:`_key`).
    """

    source: ShardSource
    chunk: int
    begin: int
    end: int
    line: int
    count: int
    key: str
    files: tuple[str, ...] = field(default=(), repr=False)


def _fingerprint(kind: str, path: Path) -> str:
    if kind == "msmarco":
        from attnsift.eval.datasets.msmarco_store import collection_fingerprint

        return collection_fingerprint(path)
    if kind == "folder":
        from attnsift.fingerprint import combine

        return combine("folder", [[rel, (path / rel).stat().st_size] for rel in _folder_files(path)])
    from attnsift.fingerprint import file_fingerprint

    return file_fingerprint(path)


def _folder_files(path: Path) -> list[str]:
    """The documents of a folder, as :func:`attnsift.documents.read_documents` orders them."""
    from attnsift.documents import TEXT_SUFFIXES

    return [p.relative_to(path).as_posix() for p in
            sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))]


def shard_source(documents: Any) -> ShardSource | None:
    """The file behind ``documents`` when workers can read it themselves, else None (texts in memory).

    Parameters
    ----------
    documents : path, Dataset, Corpus or anything else :func:`attnsift.build_index` takes
        A path (``docs.jsonl``, ``docs.tsv``, a folder of ``.txt`` files, a BEIR folder), or a data set
        (or corpus) whose documents come from a ``corpus.jsonl`` or an MS MARCO ``collection.tsv``.
    """
    if isinstance(documents, (str, Path)):
        from attnsift.documents import check_documents_path

        src = check_documents_path(documents)
        kind = "folder" if src.is_dir() else {".jsonl": "jsonl", ".tsv": "tsv"}[src.suffix.lower()]
    else:
        corpus = documents.corpus if hasattr(documents, "corpus") and hasattr(documents, "queries") else documents
        store = getattr(corpus, "store", None)
        from attnsift.eval.datasets.jsonl import JsonlStore
        from attnsift.eval.datasets.msmarco_store import MsMarcoStore

        if isinstance(store, JsonlStore):
            kind, src = "beir", store.path
        elif isinstance(store, MsMarcoStore):
            kind, src = "msmarco", store.path
        else:
            return None
    src = Path(src).absolute()
    return ShardSource(kind, str(src), _fingerprint(kind, src))


def _line_text(kind: str, raw: bytes, path: Path, lineno: int) -> str | None:
    """The ``contents`` of the document on one line of a ``kind`` file (None: a line without one), parsed
    by the code its reader uses (:class:`~attnsift.eval.datasets.jsonl.JsonlStore`, :class:`~attnsift.
    eval.datasets.msmarco_store.MsMarcoStore`, :func:`attnsift.documents.read_documents`)."""
    from attnsift.errors import DataFormatError
    from attnsift.types import Document

    if kind == "msmarco":
        line = raw.rstrip(b"\r\n")
        if not line:
            return None
        pid, _, text = line.partition(b"\t")
        try:
            return Document(pid.decode("ascii"), text.decode("utf-8")).contents
        except UnicodeDecodeError as exc:
            raise DataFormatError(f"{path}:{lineno}: byte at column {exc.start + 1} is not UTF-8 ({exc.reason}); "
                                  "re-encode the file or fix that line") from None
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}:{lineno}: byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not UTF-8 "
                              f"({exc.reason}); re-encode the file or fix that line") from None
    if not line.strip():
        return None
    where = f"{path}:{lineno}"
    if kind == "beir":
        from attnsift.eval.datasets.jsonl import parse_doc

        return parse_doc(line, path, lineno).contents
    if kind == "jsonl":
        from attnsift.documents import _from_mapping
        from attnsift.io import json_object_line

        return _from_mapping(json_object_line(line, where), f"{path.stem}-{lineno}", where).contents
    cols = line.rstrip("\r\n").split("\t")  # tsv
    if len(cols) not in (2, 3):
        raise DataFormatError(f"{where}: expected 2 tab-separated columns (id, text) or 3 (id, title, text), "
                              f"got {len(cols)}; a tab inside a text must be replaced by a space")
    doc_id, title, text = (cols[0], None, cols[1]) if len(cols) == 2 else cols
    try:
        return Document(doc_id.strip(), text, title or None).contents
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"{where}: {exc}") from None


def _file_text(path: Path, rel: str) -> str:
    from attnsift.errors import DataFormatError
    from attnsift.types import Document

    f = path / rel
    raw = f.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataFormatError(f"{f}:{line}: byte 0x{raw[exc.start]:02x} is not UTF-8 ({exc.reason}); documents "
                              "must be UTF-8 text: re-encode the file") from None
    import re

    return Document(re.sub(r"\s+", "_", Path(rel).with_suffix("").as_posix()), text.strip()).contents


def plan_shards(source: ShardSource, chunk_size: int = CHUNK) -> list[Shard]:
    """The chunks of ``source`` as :class:`Shard` descriptors, in one streamed pass over it here (only
    the descriptors are kept: byte ranges and the sha256 of each chunk's texts)."""
    path = Path(source.path)
    shards: list[Shard] = []
    if source.kind == "folder":
        files = _folder_files(path)
        for s in range(0, len(files), chunk_size):
            part = tuple(files[s:s + chunk_size])
            shards.append(Shard(source, len(shards), s, s + len(part), 1, len(part),
                                _key([_file_text(path, rel) for rel in part]), part))
        return shards
    h, count, begin, first, pos = hashlib.sha256(), 0, 0, 1, 0
    header = source.kind == "tsv"  # the first line of a .tsv may be a header (read_documents skips it)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            at, pos = pos, pos + len(raw)
            text = _line_text(source.kind, raw, path, lineno)
            if text is None:
                continue
            if header:
                header = False
                if [c.strip().lower() for c in raw.decode("utf-8").rstrip("\r\n").split("\t")] in _TSV_HEADERS:
                    continue
            if count == 0:
                h, begin, first = hashlib.sha256(), at, lineno
            _feed(h, text)
            count += 1
            if count == chunk_size:
                shards.append(Shard(source, len(shards), begin, pos, first, count, h.hexdigest()))
                count = 0
    if count:
        shards.append(Shard(source, len(shards), begin, pos, first, count, h.hexdigest()))
    return shards


_CHECKED: set[ShardSource] = set()  # sources this worker process has checked


def _check_source(source: ShardSource) -> None:
    """Raise (one line) when this process cannot read ``source`` or holds another version of it."""
    if source in _CHECKED:
        return
    node, path = socket.gethostname(), Path(source.path)
    there = path.is_dir() if source.kind == "folder" else path.is_file()
    try:
        if not there or not os.access(path, os.R_OK):
            raise FileNotFoundError(errno.ENOENT if not there else errno.EACCES,
                                    "no such file" if not there else "permission denied")
        fp = _fingerprint(source.kind, path)
    except OSError as exc:
        raise FileNotFoundError(f"{source.path} cannot be read on the Ray node {node} ({exc.strerror or exc}); "
                                f"{_ELSEWHERE}") from None
    if fp != source.fingerprint:
        raise ValueError(f"{source.path} on the Ray node {node} is not the driver's copy (its fingerprint differs); "
                         f"{_ELSEWHERE}")
    _CHECKED.add(source)


def read_shard(shard: Shard) -> list[str]:
    """The texts of ``shard``, read from this machine's copy of its file (what a worker runs).

    Raises
    ------
    FileNotFoundError
        The file is not there (or not readable) on this node.
    ValueError
        This node's file differs from the driver's (fingerprint or the chunk's texts).
    """
    source = shard.source
    _check_source(source)
    path = Path(source.path)
    try:
        if source.kind == "folder":
            texts = [_file_text(path, rel) for rel in shard.files]
        else:
            with open(path, "rb") as fh:
                fh.seek(shard.begin)
                buf = fh.read(shard.end - shard.begin)
            texts = [t for n, raw in enumerate(io.BytesIO(buf)) if (t := _line_text(source.kind, raw, path,
                                                                                     shard.line + n)) is not None]
    except OSError as exc:
        raise FileNotFoundError(f"{path} cannot be read on the Ray node {socket.gethostname()} "
                                f"({exc.strerror or exc}); {_ELSEWHERE}") from None
    if len(texts) != shard.count or _key(texts) != shard.key:
        raise ValueError(f"chunk {shard.chunk} of {path} on the Ray node {socket.gethostname()} holds other texts than "
                         f"the driver's; {_ELSEWHERE}")
    return texts


# ------------------------------------------------------------------------------------------ the encoder
def engine_encoder(encoder: Any, engine: Any, documents: Any, *, device: Any = None, chunk_size: int = CHUNK) -> Any:
    """``encoder`` (an Encoder) with the document chunks of ``documents`` encoded on ``engine``.

    Parameters
    ----------
    encoder : Encoder
        Built here: it encodes the queries and the probe, and its recipe travels to the workers.
    engine : RayEngine
        Anything with ``encode_stream(encoder, chunks, want, device)``; a chunk is a list of texts or
        a :class:`Shard`.
    documents : sequence of str, path, Dataset, Corpus, or documents
        What the index build is given. A file the workers can read (:func:`shard_source`: a path, or
        a data set read from a ``corpus.jsonl`` or ``collection.tsv``) is planned as shards that the
        workers read; anything else (texts, Documents, an ir_datasets corpus) is read here and its
        texts are sent (a sequence of strings is taken as the documents' ``contents``, in order).
    device : str, optional
        Where the workers run the encoder (default: each worker's own).

    Returns
    -------
    Encoder
        A subclass instance sharing ``encoder``'s state; texts outside the plan are encoded here.
    """
    from attnsift.retrieval.encoders import Encoder

    if not isinstance(encoder, Encoder):
        raise TypeError(f"engine_encoder needs an attnsift Encoder, got {type(encoder).__name__}")
    source = None if _is_texts(documents) else shard_source(documents)
    if source is not None:
        items: list[Any] = plan_shards(source, chunk_size)
        keys = [s.key for s in items]
        log.info("%d chunks of %s planned for the workers to read", len(items), source.path)
    else:
        if _is_texts(documents):
            texts = list(documents)
        else:
            from attnsift.documents import corpus_record

            texts = [d.contents for d in corpus_record(documents)[0]]
        items = [list(texts[s:s + chunk_size]) for s in range(0, len(texts), chunk_size)]
        keys = [_key(c) for c in items]

    class EngineEncoder(type(encoder)):  # type: ignore[misc, valid-type]
        """The wrapped encoder: planned document chunks on the engine, the rest here."""

        def _encode(self, batch: Sequence[str], is_query: bool, want: str, progress: bool | None) -> Any:
            plan = self.__dict__.get("_plan")
            if is_query or plan is None:
                return super()._encode(batch, is_query, want, progress)
            at = plan["index"].get(_key(batch))
            if at is None or at < plan["next"]:
                return super()._encode(batch, is_query, want, progress)
            return _take(plan, at, want, self)

    out = EngineEncoder.__new__(EngineEncoder)
    out.__dict__.update(encoder.__dict__)
    out.__dict__["_plan"] = {"engine": engine, "chunks": items, "index": {k: i for i, k in enumerate(keys)},
                             "next": 0, "stream": None, "want": None, "device": device, "base": encoder,
                             "buffer": {}, "source": source}
    return out


def _is_texts(documents: Any) -> bool:
    return (isinstance(documents, Sequence) and not isinstance(documents, (str, bytes))
            and all(isinstance(t, str) for t in documents))


def _take(plan: dict, at: int, want: str, owner: Any) -> Any:
    """The encoding of chunk ``at``: from the running stream, or a new stream from ``at`` onward (the
    first request, or a request behind the stream)."""
    if plan["stream"] is None or plan["want"] != want or at < plan["started"]:
        plan["stream"] = _stream(plan, at, want)
        plan["want"], plan["started"], plan["buffer"] = want, at, {}
    buffer = plan["buffer"]
    while at not in buffer:
        try:
            i, result = next(plan["stream"])
        except StopIteration:
            raise RuntimeError(f"the engine stopped before chunk {at} of the corpus; rerun (encodings resume)") from None
        if i >= at:  # a chunk the build skipped (cached) is dropped
            buffer[i] = result
    plan["next"] = at + 1
    return buffer.pop(at)


def _stream(plan: dict, start: int, want: str) -> Iterator[tuple[int, Any]]:
    """``(chunk index, result)`` for the plan's chunks from ``start`` on, in order."""
    log.info("encoding chunks %d..%d of the corpus on %s", start, len(plan["chunks"]) - 1, plan["engine"])
    for i, result in plan["engine"].encode_stream(plan["base"], plan["chunks"][start:], want, plan["device"]):
        yield start + i, result
