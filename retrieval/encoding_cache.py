"""The encoded corpus, cached by content: a second dense run on the same corpus starts in seconds.

:func:`encode_corpus_cached` encodes documents in chunks saved to a folder as they finish (an
interrupted encoding resumes where it stopped) and loads finished chunks instead of encoding them again.
:func:`default_cache_dir` names that folder by what determines the vectors:

- the texts: sha256 over every (id, text) pair (:func:`texts_fingerprint`);
- the encoder (:func:`encoder_identity`): name, resolved location, pooling, max_length, prefixes,
  normalisation, lowercasing, dtype, and the identity of its weights (size and modification time of the
  model folder's files; for a hub model the snapshot folder, whose name is the commit);
- the backend that runs the forward pass (``onnx``, ``onnx-int8``, ...; with its int8 recipe; absent for ``torch``, so caches made
  before backends existed stay valid): vectors of different backends differ slightly and never mix;
- what is stored (``dense`` sentence vectors and/or ``tokens``).

The folder is ``$ATTNSIFT_CACHE/encodings/<encoder>[-<backend>]-<kinds>-<key>``
(:func:`attnsift.fingerprint.cache_root`), so a cache made by another encoder or for other texts is
never found, and the folder's ``cache.json`` is still checked against the texts and encoder (a
mismatch starts afresh). Chunks are written atomically. Batch size does not change the vectors and is
not part of the key. ``concatenate=False`` returns the chunks as an :class:`EncodedChunks` that reads
them back one file at a time (a dense index of a large corpus is filled from it without ever holding
every vector).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from attnsift.io import atomic_file, atomic_write_json
from attnsift.progress import bar, notice

logger = logging.getLogger("attnsift.retrieval.encoders")

#: Files of a model folder whose size and modification time identify its weights and tokenizer.
_IDENTITY_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model", ".pt", ".gguf")


def texts_fingerprint(ids: Sequence[str], texts: Sequence[str]) -> str:
    """sha256 (hex) over the ``(id, text)`` pairs, in order (:class:`~attnsift.indexes.doc_store.TextsHash`,
    which a document store computes as it is written)."""
    from attnsift.indexes.doc_store import TextsHash

    h = TextsHash()
    for i, t in zip(ids, texts):
        h.add(i, t)
    return h.hexdigest()


def _weights_identity(folder: Path | None) -> dict[str, Any] | None:
    """Sizes and modification times of the model folder's files (a hub model: its cached snapshot)."""
    if folder is None or not Path(folder).is_dir():
        return None
    folder = Path(folder)
    files = {}
    for f in sorted(folder.iterdir()):
        if f.suffix in _IDENTITY_SUFFIXES:
            try:
                st = f.stat()  # follows the hub cache's symlinks to the blobs
            except OSError:
                continue
            files[f.name] = [st.st_size, st.st_mtime_ns]
    return {"folder": str(folder.resolve()), "files": files}


def model_identity(encoder: Any) -> dict[str, Any]:
    """What identifies an encoder's model weights alone: name, location, weights (file sizes and
    modification times). Keys the ONNX exports (:mod:`attnsift.retrieval.onnx_encoder`), which do not
    depend on pooling, prefixes or length."""
    return {
        "name": str(encoder.name),
        "location": str(encoder.location),
        "weights": _weights_identity(getattr(encoder, "weights_folder", None) or Path(str(encoder.location))),
    }


def encoder_backend(encoder: Any) -> str:
    """The encoder's backend (``"torch"`` for encoders without the attribute)."""
    return str(getattr(encoder, "backend", "torch") or "torch")


def encoder_identity(encoder: Any) -> dict[str, Any]:
    """What makes an encoder's document vectors what they are (hashed into the cache key).

    Parameters
    ----------
    encoder : Encoder

    Returns
    -------
    dict
        ``encoder.config`` plus ``location``, ``dtype``, ``lowercase`` and ``weights`` (file sizes and
        modification times; None when the model is not a local folder or cached hub snapshot),
        ``backend`` when it is not ``"torch"``, and ``int8_recipe`` for a quantised backend (so a
        changed recipe never reuses vectors made by the old one).
    """
    from attnsift.retrieval.onnx_quantize import RECIPES

    backend = encoder_backend(encoder)
    return {
        **encoder.config,
        **({"backend": backend} if backend != "torch" else {}),
        **({"int8_recipe": dict(RECIPES[backend])} if backend in RECIPES else {}),
        "location": str(encoder.location),
        "dtype": str(getattr(encoder, "dtype", "torch.float32")),
        "lowercase": bool(getattr(encoder, "lowercase", False)),
        "weights": _weights_identity(getattr(encoder, "weights_folder", None) or Path(str(encoder.location))),
    }


def default_cache_dir(encoder: Any, texts_sha256: str, kinds: Iterable[str]) -> Path:
    """The content-keyed cache folder of a corpus encoding (not created here).

    Parameters
    ----------
    encoder : Encoder
    texts_sha256 : str
        :func:`texts_fingerprint` of the documents.
    kinds : iterable of {"dense", "tokens"}

    Returns
    -------
    Path
        ``cache_root() / "encodings" / "<encoder>[-<backend>]-<kinds>-<key>"``.
    """
    from attnsift.fingerprint import cache_root

    kinds = sorted(set(kinds))
    blob = json.dumps({"texts": texts_sha256, "encoder": encoder_identity(encoder), "kinds": kinds},
                      sort_keys=True, default=str)
    key = hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", str(encoder.name).rsplit("/", 1)[-1])[:48] or "encoder"
    backend = encoder_backend(encoder)
    if backend != "torch":
        label += f"-{backend}"
    return cache_root() / "encodings" / f"{label}-{'+'.join(kinds)}-{key}"


def _load_chunk(path: Path, kinds: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        logger.warning("cache chunk %s is unreadable (%s); re-encoding it", path, exc)
        return None
    if not all(k in data for k in kinds):
        return None  # made for other kinds: encode again with all of them
    return data


def _chunk_has(path: Path, kinds: tuple[str, ...]) -> bool:
    """Whether the chunk file exists and lists every kind (its zip directory only: no array is read)."""
    if not path.is_file():
        return False
    try:
        with np.load(path) as z:
            names = set(z.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        logger.warning("cache chunk %s is unreadable (%s); re-encoding it", path, exc)
        return False
    return all(k in names for k in kinds)


class EncodedChunks:
    """An encoded corpus as its chunks, never concatenated (``encode_corpus_cached(concatenate=False)``).

    Attributes
    ----------
    n, dim : int
        Documents in all and the vectors' dimension.
    kinds : tuple of str
        What each chunk holds (``"dense"``; ``"tokens"`` with ``"lengths"``).

    :meth:`batches` reads the chunk files one at a time from the cache folder, so only one chunk is in
    memory; without a cache folder the chunks are held in memory (as the concatenated result would be).
    """

    def __init__(self, n: int, dim: int, kinds: tuple[str, ...], files: Sequence[Path] | None = None,
                 parts: Sequence[dict[str, np.ndarray]] | None = None) -> None:
        self.n, self.dim, self.kinds = int(n), int(dim), tuple(kinds)
        self._files = list(files) if files is not None else None
        self._parts = list(parts) if parts is not None else None

    def __repr__(self) -> str:
        where = "in memory" if self._files is None else f"{len(self._files)} chunk files"
        return f"EncodedChunks(n={self.n}, dim={self.dim}, kinds={self.kinds}, {where})"

    def batches(self, kind: str = "dense") -> Iterator[np.ndarray]:
        """The chunks' ``kind`` arrays in document order (``dense``: ``[b, dim]`` float32; ``tokens``:
        float16; ``lengths``: int32), one chunk read at a time."""
        wanted = {"dense": "dense", "tokens": "tokens", "lengths": "tokens"}
        if wanted.get(kind) not in self.kinds:
            raise ValueError(f"kind must be one of the encoded kinds {self.kinds} (or 'lengths' with tokens), got {kind!r}")
        dtype = {"dense": np.float32, "tokens": np.float16, "lengths": np.int32}[kind]
        if self._files is None:
            for part in self._parts or ():
                yield part[kind].astype(dtype, copy=False)
            return
        for path in self._files:
            with np.load(path) as z:
                yield z[kind].astype(dtype, copy=False)

    def batch_source(self, kind: str = "dense") -> Callable[[], Iterator[np.ndarray]]:
        """A function returning a fresh :meth:`batches` iterator per call (for
        :meth:`~attnsift.indexes.faiss_index.FaissIndex.build_streaming`, which reads them twice for ivfpq)."""
        return lambda: self.batches(kind)


def encode_corpus_cached(
    encoder: Any,
    ids: Sequence[str],
    texts: Sequence[str],
    cache_dir: str | Path | None,
    kinds: Iterable[str] = ("dense",),
    chunk_size: int = 512,
    progress: bool | None = None,
    *,
    texts_sha256: str | None = None,
    concatenate: bool = True,
) -> dict[str, Any] | EncodedChunks:
    """Encode documents in chunks, saving each chunk to ``cache_dir`` as it finishes.

    A rerun with the same encoder, texts and chunk size loads the finished chunks and encodes only the
    rest, so an interrupted encoding of a large corpus resumes, and a finished one is loaded in seconds
    (logged at INFO and announced by a progress line). Each chunk stores what was asked for: ``dense``
    (``[n, dim]`` float32) and/or ``tokens`` (``[sum of lengths, dim]`` float16 + lengths).

    Parameters
    ----------
    encoder : Encoder
    ids, texts : sequences of str
        Document ids and the texts to encode (same length).
    cache_dir : path or None
        Where to keep the chunks (:func:`default_cache_dir` gives the content-keyed default);
        ``None`` encodes in memory without a cache.
    kinds : iterable of {"dense", "tokens"}
    chunk_size : int
        Documents per chunk file.
    progress : bool or None
        A progress counter while encoding; None: the process setting (:mod:`attnsift.progress`).
    texts_sha256 : str, optional
        :func:`texts_fingerprint` of ``ids`` and ``texts`` when already computed.
    concatenate : bool
        True: return the concatenated arrays. False: return an :class:`EncodedChunks` whose batches are
        read back one chunk file at a time, so the whole encoding is never in memory (with
        ``cache_dir=None`` the chunks are kept in memory instead).

    Returns
    -------
    dict or EncodedChunks
        ``"dense"``: ``[N, dim]`` float32; ``"tokens"``: ``[T, dim]`` float16; ``"lengths"``: ``[N]``
        int32 tokens per document (only the kinds asked for); an EncodedChunks with ``concatenate=False``.
    """
    kinds = tuple(sorted(set(kinds)))
    if not kinds or any(k not in ("dense", "tokens") for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of ('dense', 'tokens'), got {kinds!r}")
    if len(ids) != len(texts):
        raise ValueError(f"ids and texts differ in length ({len(ids)} vs {len(texts)})")
    n = len(texts)
    starts = list(range(0, n, chunk_size))
    cache = Path(cache_dir) if cache_dir is not None else None
    label = getattr(encoder, "label", encoder.name)
    done: dict[int, dict[str, np.ndarray] | None] = {}  # None: the chunk file is there (streaming: not read)
    stream = cache is not None and not concatenate
    if cache is not None:
        backend = encoder_backend(encoder)
        meta = {
            "encoder": encoder.config,
            # torch caches predate this field: it is recorded only for the other backends.
            **({"backend": backend} if backend != "torch" else {}),
            # float32 caches predate this field: it is recorded only for other precisions.
            **({"dtype": dtype} if (dtype := str(getattr(encoder, "dtype", "torch.float32"))) != "torch.float32" else {}),
            "texts_sha256": texts_sha256 or texts_fingerprint(ids, texts),
            "count": n,
            "chunk_size": chunk_size,
        }
        cache.mkdir(parents=True, exist_ok=True)
        try:
            old = json.loads((cache / "cache.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old != meta:
            if old is not None:
                logger.warning("encoding cache %s was made for other texts or another encoder; starting afresh", cache)
            for p in cache.glob("chunk_*.npz"):
                p.unlink()
            atomic_write_json(cache / "cache.json", meta)
        for s in starts:
            path = cache / f"chunk_{s // chunk_size:06d}.npz"
            if stream:
                if _chunk_has(path, kinds):
                    done[s] = None
            elif (data := _load_chunk(path, kinds)) is not None:
                done[s] = data
    resumed = sum(min(chunk_size, n - s) for s in done)
    if resumed and resumed == n:
        logger.info("reusing cached encodings of %d documents (%s) from %s", n, label, cache)
        notice(f"reusing cached encodings of {n} documents ({label})", progress)
    elif resumed:
        logger.info("resuming an encoding: %d of %d documents cached in %s", resumed, n, cache)
    counter = bar(total=n, desc=f"encoding corpus ({label}, {'+'.join(kinds)})", unit="doc", initial=resumed,
                  progress=progress if resumed < n else False)
    want = "both" if len(kinds) == 2 else ("pooled" if kinds == ("dense",) else "tokens")
    dense_parts: list[np.ndarray] = []
    tok_parts: list[np.ndarray] = []
    len_parts: list[np.ndarray] = []
    for s in starts:
        if s in done and done[s] is None:  # streaming from the cache: read back by EncodedChunks.batches
            continue
        data = done.get(s)
        if data is None:
            chunk_texts = list(texts[s : s + chunk_size])
            pooled, toks = encoder._encode(chunk_texts, is_query=False, want=want, progress=False)
            data = {}
            if "dense" in kinds:
                data["dense"] = pooled
            if "tokens" in kinds:
                data["lengths"] = np.array([len(t) for t in toks], dtype=np.int32)
                data["tokens"] = (np.concatenate(toks) if toks else np.zeros((0, encoder.dim))).astype(np.float16)
            if cache is not None:
                with atomic_file(cache / f"chunk_{s // chunk_size:06d}.npz", "wb") as fh:
                    np.savez(fh, **data)
            counter.update(len(chunk_texts))
            if stream:
                continue
        if "dense" in kinds:
            dense_parts.append(data["dense"].astype(np.float32, copy=False))
        if "tokens" in kinds:
            tok_parts.append(data["tokens"].astype(np.float16, copy=False))
            len_parts.append(data["lengths"].astype(np.int32, copy=False))
    counter.close()
    if stream:
        return EncodedChunks(n, encoder.dim, kinds, files=[cache / f"chunk_{s // chunk_size:06d}.npz" for s in starts])
    if not concatenate:
        parts: list[dict[str, np.ndarray]] = [{} for _ in starts]
        for part, d in zip(parts, dense_parts):
            part["dense"] = d
        for part, t, ln in zip(parts, tok_parts, len_parts):
            part["tokens"], part["lengths"] = t, ln
        return EncodedChunks(n, encoder.dim, kinds, parts=parts)
    out: dict[str, Any] = {}
    if "dense" in kinds:
        out["dense"] = np.concatenate(dense_parts) if dense_parts else np.zeros((0, encoder.dim), np.float32)
    if "tokens" in kinds:
        out["tokens"] = np.concatenate(tok_parts) if tok_parts else np.zeros((0, encoder.dim), np.float16)
        out["lengths"] = np.concatenate(len_parts) if len_parts else np.zeros((0,), np.int32)
    return out
