"""The MS MARCO collection on disk: finding and unpacking the official files, the offset index, and
:class:`MsMarcoStore`, the streaming document store over ``collection.tsv`` (see :mod:`.msmarco`).

Archives and ``.gz`` files are unpacked once, streamed to disk (never held in memory), into the folder
itself when it is writable (as ``tar -xzf`` would), else into ``$ATTNSIFT_CACHE/msmarco-passage/unpacked-*``.

Random access (``get``, ``subset``, ``count``) goes through an offset index (line start and text length
per passage, and the pids unless they are 0..N-1 in order) built once in one vectorised numpy pass over
the file and stored in ``$ATTNSIFT_CACHE/msmarco-passage/offsets/<key>/`` (key: the file's path, size and
mtime), written atomically, then read memory-mapped. The corpus fingerprint is a sha256 of the file's
size, its first and last MiB and 64 blocks of 64 KiB spread evenly over it (4 MiB read, not 3 GB): a
change that keeps the size and misses every sampled block goes unnoticed.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import tarfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

from attnsift.errors import DataFormatError, DatasetError
from attnsift.fingerprint import cache_root
from attnsift.types import Document

__all__ = ["FOLDER", "COLLECTION", "ARCHIVES", "unpack_dir", "find_file", "build_offsets", "collection_fingerprint",
           "MsMarcoStore"]

logger = logging.getLogger(__name__)

FOLDER = "msmarco-passage"
COLLECTION = "collection.tsv"
# What each official archive holds (member base names), so that a file is looked for only where it can be.
ARCHIVES: dict[str, tuple[str, ...]] = {
    "collection.tar.gz": (COLLECTION,),
    "collectionandqueries.tar.gz": (COLLECTION, "queries.dev.small.tsv", "qrels.dev.small.tsv", "queries.dev.tsv"),
    "queries.tar.gz": ("queries.dev.tsv", "queries.dev.small.tsv", "qrels.dev.small.tsv"),
    "qrels.dev.tar.gz": ("qrels.dev.tsv",),
}


# ------------------------------------------------------------------------------------------ locating files
def unpack_dir(folder: Path) -> Path:
    """Where archives and ``.gz`` files of ``folder`` are unpacked: the folder when writable, else a cache folder."""
    if os.access(folder, os.W_OK):
        return folder
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    return cache_root() / FOLDER / f"unpacked-{key}"


def _plain(folder: Path, name: str) -> Path | None:
    for d in dict.fromkeys((folder, unpack_dir(folder))):
        if (d / name).is_file():
            return d / name
    return None


def _copy_to(src: IO[bytes], dest: Path) -> None:
    """Stream ``src`` into ``dest`` through a temporary beside it, renamed when complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 22)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _unpack(archive: Path, dest: Path) -> None:
    """Extract the known MS MARCO members of ``archive`` into ``dest`` in one streamed pass."""
    known = {n for names in ARCHIVES.values() for n in names}
    logger.warning("unpacking %s into %s (once)", archive, dest)
    try:
        with tarfile.open(archive, "r|gz") as tf:
            for m in tf:
                base = Path(m.name).name
                if m.isfile() and base in known and not (dest / base).is_file():
                    _copy_to(tf.extractfile(m), dest / base)  # type: ignore[arg-type]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{archive}: cannot read this .tar.gz ({exc}); download it again") from exc


def find_file(folder: Path, names: tuple[str, ...], unpack: bool = True) -> Path | None:
    """The first of ``names`` present in ``folder``: plain, as ``name.gz`` or inside an official archive
    (unpacked once, see :func:`unpack_dir`). ``unpack=False``: say where it would come from, unpack nothing."""
    for name in names:
        p = _plain(folder, name)
        if p is not None:
            return p
        if (folder / f"{name}.gz").is_file():
            if not unpack:
                return folder / f"{name}.gz"
            dest = unpack_dir(folder) / name
            try:
                with gzip.open(folder / f"{name}.gz", "rb") as src:
                    _copy_to(src, dest)
            except (OSError, EOFError) as exc:
                raise DatasetError(f"{folder / (name + '.gz')}: cannot decompress ({exc}); download it again") from exc
            return dest
        for archive, members in ARCHIVES.items():
            if name in members and (folder / archive).is_file():
                if not unpack:
                    return folder / archive
                _unpack(folder / archive, unpack_dir(folder))
                p = _plain(folder, name)
                if p is not None:
                    return p
    return None


# ------------------------------------------------------------------------------------------ offset index
def _line_of(path: Path, offset: int) -> int:
    """1-based number of the line that starts at byte ``offset`` (error messages only)."""
    n, done = 1, 0
    with open(path, "rb") as fh:
        while done < offset:
            blk = fh.read(min(1 << 22, offset - done))
            if not blk:
                break
            n += blk.count(b"\n")
            done += len(blk)
    return n


def _parse_block(arr: np.ndarray, path: Path, line0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pids, line starts and text lengths of the complete lines in ``arr`` (which ends with a newline)."""
    nl = np.flatnonzero(arr == 10)
    starts = np.concatenate([[0], nl[:-1] + 1])
    ends = nl - (arr[np.maximum(nl - 1, 0)] == 13)  # drop a \r before the newline
    keep = ends > starts  # blank lines are skipped
    line_no = np.flatnonzero(keep) + line0 + 1
    starts, ends = starts[keep], ends[keep]
    tabs = np.flatnonzero(arr == 9)
    tab = np.full(len(starts), -1, dtype=np.int64)
    if len(tabs):
        pos = np.searchsorted(tabs, starts)
        tab = np.where(pos < len(tabs), tabs[np.minimum(pos, len(tabs) - 1)], -1)
    bad = np.flatnonzero((tab < 0) | (tab >= ends) | (tab == starts) | (tab - starts > 18))
    if len(bad):
        i = bad[0]
        raise DataFormatError(f"{path}:{line_no[i]}: a collection.tsv line is 'pid<TAB>text' with an integer pid, got "
                              f"{bytes(arr[starts[i]:min(ends[i], starts[i] + 60)]).decode('utf-8', 'replace')!r}")
    plen = tab - starts
    pids = np.zeros(len(starts), dtype=np.int64)
    for j in range(int(plen.max()) if len(plen) else 0):
        m = plen > j
        d = arr[starts[m] + j].astype(np.int64) - 48
        wrong = (d < 0) | (d > 9) | ((j == 0) & (d == 0) & (plen[m] > 1))
        if wrong.any():
            i = np.flatnonzero(m)[np.argmax(wrong)]
            raise DataFormatError(f"{path}:{line_no[i]}: pid {bytes(arr[starts[i]:tab[i]]).decode('utf-8', 'replace')!r} "
                                  "is not an integer (MS MARCO pids are 0, 1, 2, ...; other ids: use a BEIR-layout folder)")
        pids[m] = pids[m] * 10 + d
    return pids, tab + 1, (ends - tab - 1).astype(np.int32)


def build_offsets(path: Path, block: int = 64 << 20) -> dict[str, np.ndarray]:
    """One vectorised pass over a collection.tsv: ``pids``, ``offsets`` (byte where each text starts)
    and ``lengths`` (text bytes), blank lines skipped.

    Raises
    ------
    DataFormatError
        A line without a tab or with a non-integer pid, or a pid listed twice (file:line).
    """
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    base, lines, carry = 0, 0, b""
    with open(path, "rb") as fh:
        while True:
            blk = fh.read(block)
            buf = carry + blk if carry else blk
            if not blk:
                if buf:  # last line without a newline
                    buf += b"\n"
                else:
                    break
            arr = np.frombuffer(buf, dtype=np.uint8)
            last = buf.rfind(b"\n")
            if last < 0:
                carry = buf
                continue
            p, s, n = _parse_block(arr[:last + 1], path, lines)
            parts.append((p, s + base, n))
            lines += buf.count(b"\n", 0, last + 1)
            base += last + 1
            carry = buf[last + 1:]
            if not blk:
                break
    pids = np.concatenate([x[0] for x in parts]) if parts else np.zeros(0, np.int64)
    offsets = np.concatenate([x[1] for x in parts]) if parts else np.zeros(0, np.int64)
    lengths = np.concatenate([x[2] for x in parts]) if parts else np.zeros(0, np.int32)
    if not (len(pids) and pids[0] == 0 and pids[-1] == len(pids) - 1 and np.all(np.diff(pids) == 1)):
        srt = np.sort(pids)
        dup = np.flatnonzero(srt[1:] == srt[:-1])
        if len(dup):
            a, b = np.flatnonzero(pids == srt[dup[0]])[:2]
            raise DataFormatError(f"{path}:{_line_of(path, int(offsets[b]))}: pid {int(pids[b])} is listed twice "
                                  f"(first at line {_line_of(path, int(offsets[a]))}); deduplicate the collection")
    return {"pids": pids, "offsets": offsets, "lengths": lengths}


def collection_fingerprint(path: Path, blocks: int = 64) -> str:
    """sha256 of the file's size, first and last MiB and ``blocks`` evenly spaced 64 KiB blocks."""
    size = path.stat().st_size
    h = hashlib.sha256(f"msmarco-collection-v1|{size}".encode())
    with open(path, "rb") as fh:
        spots = [0, max(0, size - (1 << 20))] + [size * i // (blocks + 1) for i in range(1, blocks + 1)]
        for i, at in enumerate(spots):
            h.update(os.pread(fh.fileno(), (1 << 20) if i < 2 else (1 << 16), at))
    return h.hexdigest()


class MsMarcoStore:
    """The passages of a collection.tsv (a :class:`~attnsift.eval.datasets.base.DocumentStore`).

    ``iter_documents`` streams the file; ``get``/``subset``/``count`` use the offset index (built on
    first use, then read memory-mapped from the cache); nothing holds all the passages.

    Parameters
    ----------
    folder : Path
        The ``msmarco-passage`` folder (collection.tsv, or an archive unpacked on first use).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._path: Path | None = _plain(self.folder, COLLECTION)
        self._index: dict[str, Any] | None = None
        self._order: np.ndarray | None = None
        self.known_len: int | None = None
        if self._path is not None:
            meta = self._index_dir(self._path) / "meta.json"
            if meta.is_file():
                self.known_len = json.loads(meta.read_text())["count"]

    @property
    def source(self) -> str:
        return f"local:{self.folder}"

    @property
    def path(self) -> Path:
        """The collection.tsv (unpacked from its archive on first use)."""
        if self._path is None:
            self._path = find_file(self.folder, (COLLECTION,))
            if self._path is None:
                raise DatasetError(f"{self.folder} has no collection.tsv, collection.tar.gz or collectionandqueries.tar.gz")
        return self._path

    @staticmethod
    def _index_dir(path: Path) -> Path:
        st = path.stat()
        key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]
        return cache_root() / FOLDER / "offsets" / key

    def index(self) -> dict[str, Any]:
        """The offset index: ``offsets``, ``lengths``, ``pids`` (None when dense 0..N-1), ``count``."""
        if self._index is None:
            from attnsift.io import atomic_dir

            d = self._index_dir(self.path)
            if not (d / "meta.json").is_file():
                built = build_offsets(self.path)
                dense = bool(np.array_equal(built["pids"], np.arange(len(built["pids"]))))
                with atomic_dir(d) as tmp:
                    np.save(tmp / "offsets.npy", built["offsets"])
                    np.save(tmp / "lengths.npy", built["lengths"])
                    if not dense:
                        np.save(tmp / "pids.npy", built["pids"])
                    (tmp / "meta.json").write_text(json.dumps({"count": len(built["pids"]), "dense": dense,
                                                               "file": str(self.path), "version": 1}))
                del built
            meta = json.loads((d / "meta.json").read_text())
            self._index = {"count": meta["count"], "offsets": np.load(d / "offsets.npy", mmap_mode="r"),
                           "lengths": np.load(d / "lengths.npy", mmap_mode="r"),
                           "pids": None if meta["dense"] else np.load(d / "pids.npy", mmap_mode="r")}
            self.known_len = meta["count"]
        return self._index

    def _positions(self, ids: set[str]) -> np.ndarray:
        """Index rows of ``ids`` (absent ids dropped), in file order."""
        ix = self.index()
        ints = np.array([int(i) for i in ids if i.isdigit() and (i == "0" or i[0] != "0") and len(i) <= 18],
                        dtype=np.int64)
        if ix["pids"] is None:
            return np.sort(ints[(ints >= 0) & (ints < ix["count"])])
        if self._order is None:
            self._order = np.argsort(ix["pids"], kind="stable")
        srt = ix["pids"][self._order]
        at = np.minimum(np.searchsorted(srt, ints), max(len(srt) - 1, 0))
        hit = srt[at] == ints if len(srt) else np.zeros(len(ints), bool)
        return np.sort(self._order[at[hit]])

    def _read(self, fd: int, row: int) -> Document:
        ix = self.index()
        pid = str(row if ix["pids"] is None else int(ix["pids"][row]))
        raw = os.pread(fd, int(ix["lengths"][row]), int(ix["offsets"][row]))
        try:
            return Document(pid, raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataFormatError(f"{self.path}: pid {pid} (byte {int(ix['offsets'][row]) + exc.start}) is not UTF-8 "
                                  f"({exc.reason}); re-encode the file") from None

    def get(self, doc_id: str) -> Document | None:
        rows = self._positions({str(doc_id)})
        if not len(rows):
            return None
        with open(self.path, "rb") as fh:
            return self._read(fh.fileno(), int(rows[0]))

    def subset(self, wanted: set[str]) -> dict[str, Document]:
        rows = self._positions(set(wanted))
        with open(self.path, "rb") as fh:
            docs = [self._read(fh.fileno(), int(r)) for r in rows]
        return {d.id: d for d in docs}

    def count(self) -> int:
        return int(self.index()["count"])

    def iter_documents(self) -> Iterator[Document]:
        self.index()  # validates the whole file (tabs, integer pids, no duplicates) before the first document
        with open(self.path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                line = raw.rstrip(b"\r\n")
                if not line:
                    continue
                pid, _, text = line.partition(b"\t")
                try:
                    yield Document(pid.decode("ascii"), text.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise DataFormatError(f"{self.path}:{lineno}: byte at column {exc.start + 1} is not UTF-8 "
                                          f"({exc.reason}); re-encode the file or fix that line") from None

    def fingerprint(self) -> str:
        """See :func:`collection_fingerprint` (size, head, tail and sampled blocks; not the whole file)."""
        return collection_fingerprint(self.path)
