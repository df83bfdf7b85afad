"""A corpus on disk, read by position: ``documents.jsonl`` and its offsets; documents read with pread.

An index over millions of passages must not hold millions of Documents. A :class:`DocumentStore` is a
read-only ``Sequence[Document]`` over a folder's files that builds only the documents asked for
(:meth:`DocumentStore.at`, ``store[i]``); its ids are read without any Document (a :class:`PackedIds`)::

    documents.jsonl        one JSON object per line: {"_id" (or "id"), "title", "text", "metadata"}
    documents.offsets.npy  int64 [N + 1]  byte offset of each line
    doc_ids.txt            the ids, one per line
    doc_ids.offsets.npy    int64 [N + 1]  byte offset of each id's line
    id_rank.npy            int32 [N]      each id's position in sorted (code point) order (tie-breaking)
    doc_ids.json           the ids as one JSON list (dense / late folders only: what earlier attnsift reads)

:func:`write_store` streams documents once into such a folder (files written atomically), checks what
:func:`attnsift.documents.as_documents` checks and computes the texts' sha256 (:class:`TextsHash`, the
encoding cache's key) on the way. :func:`open_store` reads a folder back with cheap checks (counts,
offsets; no line parsed); a dense or late folder of earlier attnsift (``documents.jsonl`` and
``doc_ids.json`` only) by a scan for line ends. :func:`export_store` hard-links (else copies) a store
into an index folder. BM25 folders use the same files (``"id"`` key, no ``doc_ids.json``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import weakref
from array import array
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from attnsift.errors import IndexCorruptedError
from attnsift.types import Document

DOCS, DOC_OFFSETS = "documents.jsonl", "documents.offsets.npy"
IDS, ID_OFFSETS, ID_RANK, IDS_JSON = "doc_ids.txt", "doc_ids.offsets.npy", "id_rank.npy", "doc_ids.json"
_BLOCK = 1 << 16  # documents parsed per block when iterating a store


def _map_file(path: Path) -> Any:
    """The file's bytes, memory-mapped read-only (an empty file: b""), without read-ahead: a look-up by
    position brings in its own pages, not the neighbouring megabytes (which would count in the RSS)."""
    import mmap

    if not path.stat().st_size:
        return b""
    with open(path, "rb") as fh:
        out = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(out, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        out.madvise(mmap.MADV_RANDOM)
    return out


def document_to_json(doc: Document, id_key: str = "id") -> dict[str, Any]:
    return {id_key: doc.id, "title": doc.title, "text": doc.text, "metadata": dict(doc.metadata)}


def document_from_json(d: Mapping[str, Any]) -> Document:
    """A Document from a stored line (``"id"``: BM25 folders; ``"_id"``: dense and late ones)."""
    return Document(d["_id"] if "_id" in d else d["id"], d["text"], d.get("title"), d.get("metadata") or {})


class TextsHash:
    """sha256 over ``(id, contents)`` pairs in order: :func:`~attnsift.retrieval.encoding_cache.texts_fingerprint`."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def add(self, doc_id: str, text: str) -> None:
        self._h.update(doc_id.encode("utf-8"))
        self._h.update(b"\0")
        self._h.update(text.encode("utf-8"))
        self._h.update(b"\1")

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class _Positional:
    """Equality with any sequence of the same items (``retriever.doc_ids == ["a", "b"]`` keeps working)."""

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (str, bytes)) or not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))  # type: ignore[arg-type]


class PackedIds(_Positional, Sequence[str]):
    """Document ids read from a ``"\\n"``-separated UTF-8 file (memory-mapped) by position."""

    def __init__(self, blob: Any, offsets: np.ndarray) -> None:
        self._blob, self._offsets = blob, offsets  # bytes or mmap.mmap: slicing gives bytes
        self._positions: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._blob[int(self._offsets[i]) : int(self._offsets[i + 1]) - 1].decode("utf-8")

    def take(self, positions: np.ndarray) -> list[str]:
        """The ids at ``positions`` (``[k]`` ints), as a list of str (one gather of their bytes)."""
        positions = np.asarray(positions, dtype=np.int64)
        if not len(positions):
            return []
        lo, hi = self._offsets[positions], self._offsets[positions + 1]  # each line ends in "\n"
        cnt = hi - lo
        pos = np.repeat(lo - (np.cumsum(cnt) - cnt), cnt) + np.arange(int(cnt.sum()), dtype=np.int64)
        raw = np.frombuffer(self._blob, dtype=np.uint8)[pos].tobytes()
        return raw.decode("utf-8").split("\n")[:-1]

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), _BLOCK):
            stop = min(start + _BLOCK, len(self))
            chunk = self._blob[int(self._offsets[start]) : int(self._offsets[stop])].decode("utf-8")
            yield from chunk.split("\n")[:-1]

    def position(self, doc_id: str) -> int | None:
        """Index of ``doc_id`` (a ``dict`` over all ids is built on first use)."""
        if self._positions is None:
            self._positions = {d: i for i, d in enumerate(self)}
        return self._positions.get(doc_id)


class DocumentStore(_Positional, Sequence[Document]):
    """The documents of ``documents.jsonl`` by position, built only when asked for.

    Parameters
    ----------
    path : Path
        The ``documents.jsonl`` file (read with ``os.pread``; its offsets may be memory-mapped).
    offsets : np.ndarray
        ``[N + 1]`` int64 byte offset of each line.
    ids : sequence of str
        ``[N]`` the ids in order (a :class:`PackedIds`, or a list).
    id_rank : np.ndarray, optional
        ``[N]`` each id's position in sorted order (None: computed from ``ids`` when first needed).
    texts_sha256 : str, optional
        :class:`TextsHash` of the documents, when the writer computed it.
    """

    def __init__(self, path: Path, offsets: np.ndarray, ids: Sequence[str], id_rank: np.ndarray | None = None,
                 texts_sha256: str | None = None) -> None:
        self.path, self.offsets, self.ids = Path(path), offsets, ids
        # read with pread, not a memory map: the kernel maps a faulting page's cached neighbours too
        # (fault-around), so random look-ups would fill the RSS with most of the file's pages
        self._fd = os.open(self.path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)
        self._id_rank, self.texts_sha256 = id_rank, texts_sha256
        self._list_pos: dict[str, int] | None = None

    def __repr__(self) -> str:
        return f"DocumentStore({str(self.path)!r}, docs={len(self)})"

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _parse(self, raw: bytes, i: int) -> Document:
        try:
            return document_from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexCorruptedError(f"{self.path} line {i + 1} is unreadable ({exc}); rebuild the index") from exc

    def at(self, positions: Iterable[int]) -> list[Document]:
        """The documents at ``positions`` (ints in ``[0, N)``), in that order."""
        off, fd = self.offsets, self._fd
        return [self._parse(os.pread(fd, int(off[i + 1]) - int(off[i]), int(off[i])), int(i)) for i in positions]

    def _run(self, start: int, stop: int) -> list[Document]:
        """The documents ``start:stop`` from one read of their bytes."""
        off = self.offsets
        base, end = int(off[start]), int(off[stop])
        block = os.pread(self._fd, end - base, base) if end > base else b""
        if len(block) != end - base:
            raise IndexCorruptedError(f"{self.path} is shorter than its offsets say; rebuild the index")
        return [self._parse(block[int(off[i]) - base : int(off[i + 1]) - base], i) for i in range(start, stop)]

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            return self._run(start, max(start, stop)) if step == 1 else self.at(range(start, stop, step))
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.at([i])[0]

    def __iter__(self) -> Iterator[Document]:
        for start in range(0, len(self), _BLOCK):
            yield from self._run(start, min(start + _BLOCK, len(self)))

    def texts(self) -> "StoreTexts":
        """The documents' ``contents`` as a lazy sequence (slices build only their documents)."""
        return StoreTexts(self)

    def position(self, doc_id: str) -> int | None:
        """Index of ``doc_id`` (a ``dict`` over all ids is built on first use)."""
        if self._list_pos is None:
            self._list_pos = {d: i for i, d in enumerate(self.ids)}
        return self._list_pos.get(doc_id)

    @property
    def id_rank(self) -> np.ndarray:
        """``[N]`` each document's position in doc-id order (code point order, as Python compares str)."""
        if self._id_rank is None:
            self._id_rank = rank_ids(self.ids)
        return self._id_rank

    def files(self) -> dict[str, Any]:
        """``name -> path`` of the store's files (for :func:`export_store`)."""
        folder = self.path.parent
        return {n: folder / n for n in (DOCS, DOC_OFFSETS, IDS, ID_OFFSETS, ID_RANK, IDS_JSON) if (folder / n).is_file()}


class StoreTexts(Sequence[str]):
    """A store's ``contents`` by position (what the encoder reads), built a slice at a time."""

    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    def __len__(self) -> int:
        return len(self._store)

    def __getitem__(self, i: Any) -> Any:
        return [d.contents for d in self._store[i]] if isinstance(i, slice) else self._store[i].contents


def take_documents(documents: Sequence[Document], positions: Sequence[int]) -> list[Document]:
    """``[documents[p] for p in positions]``, one batched read for a :class:`DocumentStore`."""
    at = getattr(documents, "at", None)
    return at(positions) if at is not None else [documents[p] for p in positions]


# ------------------------------------------------------------------------------------------ writing
class LineWriter:
    """Write lines to a file and record the byte offset of each (``[n + 1]`` int64 when done)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "wb")
        self._offsets = array("q", [0])
        self._pos = 0

    def write(self, line: str) -> None:
        raw = line.encode("utf-8") + b"\n"
        self._fh.write(raw)
        self._pos += len(raw)
        self._offsets.append(self._pos)

    def close(self, offsets_path: Path) -> np.ndarray:
        self._fh.close()
        offsets = np.frombuffer(self._offsets, dtype=np.int64)
        np.save(offsets_path, offsets, allow_pickle=False)
        return offsets


def id_ranks(ids_file: Path, n: int) -> np.ndarray:
    """``[n]`` each id's position in sorted (code point) order; raises ValueError on a duplicate id.

    Ids of up to 64 bytes are sorted as fixed-width byte strings gathered block by block from the file's
    bytes (no Python object per id: about 30 bytes of memory per id beside the file's bytes).
    """
    blob = ids_file.read_bytes()
    arr = np.frombuffer(blob, dtype=np.uint8)
    off = np.zeros(n + 1, dtype=np.int64)
    off[1:] = np.flatnonzero(arr == 10)[:n] + 1
    lens = np.diff(off) - 1
    longest = int(lens.max()) if n else 0
    if longest <= 64 and b"\x00" not in blob:
        width = max(longest, 1)
        keys = np.zeros(n, dtype=f"S{width}")  # UTF-8 byte order = code point order
        rows, cols = keys.view(np.uint8).reshape(n, width), np.arange(width)
        step = max(1, (1 << 22) // width)
        for s in range(0, n, step):
            e = min(s + step, n)
            idx = off[s:e, None] + cols  # [b, width]
            rows[s:e] = np.where(cols < lens[s:e, None], arr[np.minimum(idx, len(arr) - 1)], 0)
        del off, lens
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        dup = np.flatnonzero(sk[1:] == sk[:-1])
        first_dup = sk[dup[0]].decode("utf-8") if dup.size else None
    else:
        strs = [p.decode("utf-8") for p in blob.split(b"\n")[:n]]
        order = np.asarray(sorted(range(len(strs)), key=strs.__getitem__), dtype=np.int64)
        first_dup = next((strs[order[j]] for j in range(len(order) - 1) if strs[order[j]] == strs[order[j + 1]]), None)
    if first_dup is not None:
        raise ValueError(f"duplicate document id {first_dup!r}: every document id in the corpus must be unique")
    rank = np.empty(n, dtype=np.int32 if n < 2**31 else np.int64)
    rank[order] = np.arange(n, dtype=rank.dtype)
    return rank


def rank_ids(ids: Sequence[str]) -> np.ndarray:
    """``[n]`` each id's position in sorted (code point) order, as Python's string order gives it."""
    n = len(ids)
    arr = np.asarray(list(ids), dtype=str) if n else np.zeros(0, dtype="U1")
    if n and arr.dtype.itemsize <= 4 * 64 and int(np.char.str_len(arr).sum()) == sum(map(len, ids)):
        order = np.argsort(arr, kind="stable")  # fixed-width unicode compares by code point
    else:  # long ids, or ids ending in NUL (numpy strips those): Python's comparison
        order = np.argsort(np.asarray(list(ids), dtype=object), kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def write_store(documents: Iterable[Document], folder: str | Path, *, id_key: str = "_id", ids_json: bool = True,
                progress: bool | None = None) -> DocumentStore:
    """Stream ``documents`` once into the store files of ``folder`` (created if needed); returns the
    :class:`DocumentStore` over them, with ``texts_sha256`` set.

    Parameters
    ----------
    documents : iterable of Document
        In index order; read once.
    folder : path
        Gets the files of the module docstring; each appears complete or not at all.
    id_key : {"_id", "id"}
        The id's key on a ``documents.jsonl`` line (``"_id"``: dense and late folders, as earlier
        attnsift wrote them; ``"id"``: BM25).
    ids_json : bool
        Also write ``doc_ids.json`` (what earlier attnsift reads), streamed.
    progress : bool or None
        A counter on stderr (None: the process setting).

    Raises
    ------
    ValueError
        No documents, only empty texts, or a duplicate id (after the pass; no file is left behind).
    """
    from attnsift.io import atomic_file
    from attnsift.progress import bar

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    h, any_text = TextsHash(), False
    with atomic_file(folder / DOCS, "wb") as dfh, atomic_file(folder / IDS, "wb") as ifh, \
            atomic_file(folder / IDS_JSON, "w") if ids_json else nullcontext() as jfh:
        doff, ioff, dpos, ipos = array("q", [0]), array("q", [0]), 0, 0
        for doc in bar(documents, desc="storing documents", unit="doc", progress=progress):
            raw = (json.dumps(document_to_json(doc, id_key), ensure_ascii=False, default=str) + "\n").encode("utf-8")
            rid = (doc.id + "\n").encode("utf-8")
            dfh.write(raw)
            ifh.write(rid)
            dpos, ipos = dpos + len(raw), ipos + len(rid)
            doff.append(dpos)
            ioff.append(ipos)
            if jfh is not None:
                jfh.write(("[" if len(ioff) == 2 else ", ") + json.dumps(doc.id))
            h.add(doc.id, doc.contents)
            any_text = any_text or bool(doc.contents.strip())
        n = len(doff) - 1
        if not n:
            raise ValueError("no documents given: pass at least one text or Document")
        if not any_text:
            raise ValueError(f"all {n} documents have empty text; give documents with some words in them")
        if jfh is not None:
            jfh.write("]")
    try:
        rank = id_ranks(folder / IDS, n)
    except ValueError:  # a duplicate id: nothing is kept
        for name in (DOCS, IDS, IDS_JSON):
            (folder / name).unlink(missing_ok=True)
        raise
    for name, arr in ((DOC_OFFSETS, np.frombuffer(doff, np.int64)), (ID_OFFSETS, np.frombuffer(ioff, np.int64)),
                      (ID_RANK, rank)):
        with atomic_file(folder / name, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
    return open_store(folder, n, texts_sha256=h.hexdigest())


# ------------------------------------------------------------------------------------------ reading
def _line_offsets(path: Path) -> np.ndarray:
    """``[N + 1]`` offsets of the lines of ``path`` (each ending in ``\\n``), read block by block."""
    parts, pos = [np.zeros(1, np.int64)], 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 26):
            parts.append(np.flatnonzero(np.frombuffer(block, np.uint8) == 10).astype(np.int64) + (pos + 1))
            pos += len(block)
    return np.concatenate(parts)


def open_store(folder: str | Path, doc_count: int, stored: int | None = None, what: str = "entries", *,
               texts_sha256: str | None = None) -> DocumentStore:
    """The store of an index folder, checked against the manifest's ``doc_count`` and the number of
    ``stored`` entries of the index itself (``what`` names them: vectors, token offsets).

    A folder without ``documents.offsets.npy`` (written by earlier attnsift) is read through
    ``doc_ids.json`` and a scan for line ends. Only counts, sizes and the first and last ids are
    checked here (the manifest's checksums vouch for the bytes); a line that does not parse raises when read.

    Raises
    ------
    IndexCorruptedError
        Missing files, or files that disagree in count or order.
    """
    folder = Path(folder)
    docs, fix = folder / DOCS, "rebuild the index"
    if not docs.is_file():
        raise IndexCorruptedError(f"index file {docs} is missing; the index is incomplete, {fix}")
    try:
        if (folder / DOC_OFFSETS).is_file():
            offsets = np.load(folder / DOC_OFFSETS, mmap_mode="r", allow_pickle=False)
            id_off = np.load(folder / ID_OFFSETS, mmap_mode="r", allow_pickle=False)
            rank = np.load(folder / ID_RANK, mmap_mode="r", allow_pickle=False)
            if id_off.ndim != 1 or len(id_off) < 1 or int(id_off[-1]) != (folder / IDS).stat().st_size:
                raise IndexCorruptedError(f"{folder}/{ID_OFFSETS} does not fit {IDS}; {fix}")
            ids: Sequence[str] = PackedIds(_map_file(folder / IDS), id_off)
            if rank.shape != (len(ids),):
                raise IndexCorruptedError(f"{folder}/{ID_RANK} has shape {rank.shape}, expected ({len(ids)},); {fix}")
        else:  # earlier attnsift: the ids as one JSON list, no offsets
            ids = json.loads((folder / IDS_JSON).read_text(encoding="utf-8"))
            offsets, rank = _line_offsets(docs), None
            if not isinstance(ids, list):
                raise ValueError(f"{IDS_JSON} is not a list")
    except FileNotFoundError as exc:
        raise IndexCorruptedError(f"index file {exc.filename} is missing; the index is incomplete, {fix}") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, IndexCorruptedError):
            raise
        raise IndexCorruptedError(f"{folder}: the document files are unreadable ({exc}); {fix}") from exc
    size = docs.stat().st_size
    if offsets.ndim != 1 or len(offsets) < 1 or int(offsets[0]) != 0 or int(offsets[-1]) != size:
        raise IndexCorruptedError(f"{folder}/{DOC_OFFSETS} does not fit {DOCS} ({size} bytes); {fix}")
    n = len(offsets) - 1
    if not (n == len(ids) == doc_count) or (stored is not None and stored != doc_count):
        raise IndexCorruptedError(f"{folder}: documents ({n}), ids ({len(ids)}), manifest ({doc_count}) and {what} "
                                  f"({stored}) disagree in count; {fix}")
    store = DocumentStore(docs, offsets, ids, rank, texts_sha256)
    if n and any(store[i].id != ids[i] for i in {0, n - 1}):
        raise IndexCorruptedError(f"{folder}: {DOCS} and the ids disagree in order; {fix}")
    return store


def export_store(documents: Sequence[Document], folder: Path, *, id_key: str = "_id", ids_json: bool = True) -> None:
    """Put ``documents`` into the index folder ``folder``: a :class:`DocumentStore`'s files hard-linked
    (same file system) or copied byte for byte, never parsed (a store of earlier attnsift gets its
    missing files made from its offsets and ids); a list is written by :func:`write_store`."""
    if not isinstance(documents, DocumentStore):
        write_store(documents, folder, id_key=id_key, ids_json=ids_json, progress=False)
        return
    for name, src in documents.files().items():
        if name == IDS_JSON and not ids_json:
            continue
        try:
            os.link(src, folder / name)
        except OSError:
            shutil.copyfile(src, folder / name)
    if not (folder / DOC_OFFSETS).is_file():
        np.save(folder / DOC_OFFSETS, np.asarray(documents.offsets, dtype=np.int64), allow_pickle=False)
    if not (folder / IDS).is_file():
        w = LineWriter(folder / IDS)
        for d in documents.ids:
            w.write(d)
        w.close(folder / ID_OFFSETS)
        np.save(folder / ID_RANK, id_ranks(folder / IDS, len(documents)), allow_pickle=False)
    if ids_json and not (folder / IDS_JSON).is_file():
        with open(folder / IDS_JSON, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(list(documents.ids)))


def spool_documents(documents: Iterable[Document], folder: str | Path | None = None, *,
                    progress: bool | None = None) -> DocumentStore:
    """:func:`write_store` into ``folder``, or (None) into a fresh folder under ``$ATTNSIFT_CACHE/spool``
    (else the system's temporary folder) that is deleted with the returned store (or at exit)."""
    if folder is not None:
        return write_store(documents, folder, progress=progress)
    path = _temporary_dir()
    try:
        store = write_store(documents, path, progress=progress)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    weakref.finalize(store, shutil.rmtree, str(path), True)
    return store


def _temporary_dir() -> Path:
    import tempfile

    from attnsift.fingerprint import cache_root

    try:
        (cache_root() / "spool").mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="docs-", dir=cache_root() / "spool"))
    except OSError:
        return Path(tempfile.mkdtemp(prefix="attnsift-docs-"))
