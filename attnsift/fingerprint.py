"""Content fingerprints: what a result, an index or a cache was made from.

- :func:`file_fingerprint`: the sha256 of a file's bytes, remembered in a small JSON cache
  (``$ATTNSIFT_CACHE/fingerprints.json``, default ``~/.cache/attnsift``) keyed by the resolved path,
  size and ``mtime_ns``, so fingerprinting a large corpus twice reads it once; a file whose size or
  modification time changed is hashed again.
- :func:`folder_fingerprint`: every file of a folder (or of a list of files), by name and content.
- :func:`documents_fingerprint`: an in-memory corpus, by its documents' ids, titles and texts.
- :func:`combine`: one fingerprint from several parts (strings, numbers, lists, dicts: anything JSON).

All return 64 hex characters (sha256).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable

from attnsift.io import atomic_write_json, sha256_file
from attnsift.types import Document

__all__ = ["CACHE_ENV", "cache_root", "file_fingerprint", "folder_fingerprint", "documents_fingerprint", "combine"]

log = logging.getLogger(__name__)

CACHE_ENV = "ATTNSIFT_CACHE"
CACHE_FILE = "fingerprints.json"
MAX_ENTRIES = 4096  # the oldest entries go first beyond this
# A file modified less than this many seconds ago is not cached: a second change within the clock's
# resolution could keep its size and mtime (git's "racily clean" case).
RACY_SECONDS = 2.0


def cache_root() -> Path:
    """attnsift's cache folder: ``$ATTNSIFT_CACHE``, default ``~/.cache/attnsift`` (not created here)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "attnsift").expanduser()


def _as_path(path: Any, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a file path (str or Path), got {type(path).__name__}: {path!r}")
    return Path(path)


def _load_cache(cache_path: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:  # unreadable or damaged: start a new one
        log.debug("fingerprint cache %s unreadable (%s); starting a new one", cache_path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _save_cache(cache_path: Path, cache: dict[str, Any]) -> None:
    if len(cache) > MAX_ENTRIES:
        keep = sorted(cache.items(), key=lambda kv: kv[1].get("used", 0.0) if isinstance(kv[1], dict) else 0.0)
        cache = dict(keep[-MAX_ENTRIES:])
    try:
        atomic_write_json(cache_path, cache)
    except OSError as exc:  # a read-only cache folder costs speed, never correctness
        log.debug("fingerprint cache %s not written (%s)", cache_path, exc)


def file_fingerprint(path: str | os.PathLike) -> str:
    """The sha256 of a file's content, cached by (resolved path, size, mtime_ns).

    Parameters
    ----------
    path : str or Path
        A regular file (symlinks are followed).

    Returns
    -------
    str
        64 hex characters; equal for equal bytes wherever the file lives.

    Raises
    ------
    TypeError
        ``path`` is not a str or Path.
    FileNotFoundError
        No file at ``path``.
    IsADirectoryError
        ``path`` is a folder (use :func:`folder_fingerprint`).
    """
    p = _as_path(path, "file_fingerprint's path")
    if not p.exists():
        raise FileNotFoundError(f"cannot fingerprint {p}: no such file")
    if p.is_dir():
        raise IsADirectoryError(f"cannot fingerprint {p} with file_fingerprint: it is a folder; use folder_fingerprint")
    resolved = p.resolve()
    st = resolved.stat()
    cache_path = cache_root() / CACHE_FILE
    cache = _load_cache(cache_path)
    entry = cache.get(str(resolved))
    if (isinstance(entry, dict) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns
            and isinstance(entry.get("sha256"), str)):
        return entry["sha256"]
    digest = sha256_file(resolved)
    after = resolved.stat()
    stable = (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    if stable and time.time() - st.st_mtime_ns / 1e9 >= RACY_SECONDS:
        cache[str(resolved)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest, "used": time.time()}
        _save_cache(cache_path, cache)
    return digest


def combine(*parts: Any) -> str:
    """One fingerprint of several parts, in order.

    Parameters
    ----------
    *parts
        JSON values (str, int, float, bool, None, lists and dicts of them); dict key order does not matter.

    Raises
    ------
    TypeError
        A part is not a JSON value.
    """
    try:
        text = json.dumps(list(parts), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"combine takes JSON values (str, numbers, lists, dicts), got {parts!r}: {exc}") from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def folder_fingerprint(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> str:
    """One fingerprint of several files, by name and content.

    Parameters
    ----------
    paths : folder, or iterable of file paths
        A folder: every file under it (recursively, symlinks followed), named by its path relative
        to the folder. An iterable: those files, named by their base names. Order does not matter.

    Raises
    ------
    TypeError
        ``paths`` is neither a path nor an iterable of paths.
    FileNotFoundError
        The folder or one of the files does not exist.
    ValueError
        The folder holds no file, or the iterable is empty.
    """
    if isinstance(paths, (str, os.PathLike)):
        root = Path(paths)
        if not root.exists():
            raise FileNotFoundError(f"cannot fingerprint {root}: no such folder")
        if not root.is_dir():
            return combine("files", [[root.name, file_fingerprint(root)]])
        named = [(f.relative_to(root).as_posix(), f) for f in sorted(root.rglob("*")) if f.is_file()]
        if not named:
            raise ValueError(f"cannot fingerprint {root}: the folder holds no file")
    else:
        if not hasattr(paths, "__iter__"):
            raise TypeError(f"folder_fingerprint takes a folder or an iterable of file paths, got {type(paths).__name__}")
        files = [_as_path(f, "each of folder_fingerprint's paths") for f in paths]
        if not files:
            raise ValueError("folder_fingerprint was given no file; pass a folder or at least one file path")
        named = [(f.name, f) for f in files]
    return combine("files", sorted([name, file_fingerprint(f)] for name, f in named))


def documents_fingerprint(documents: Iterable[Document]) -> str:
    """A fingerprint of documents held in memory: each one's id, title and text, in order.

    Parameters
    ----------
    documents : iterable of Document

    Raises
    ------
    TypeError
        An item is not a :class:`~attnsift.types.Document`.
    """
    h = hashlib.sha256(b"documents\0")
    for i, d in enumerate(documents):
        if not isinstance(d, Document):
            raise TypeError(f"documents_fingerprint takes Document objects, got {type(d).__name__} at position {i}")
        for part in (d.id, d.title if d.title is not None else "\0none", d.text):
            b = part.encode("utf-8", "surrogatepass")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    return h.hexdigest()


def hub_offline() -> bool:
    """Whether the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``
    set to 1/true/yes/on). Online, a hub id (``org/name``) that is not in the local cache is downloaded
    by transformers when it loads; offline it is an error before any work."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache_dir() -> Path:
    """The local Hugging Face hub cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub``, ``~/.cache/huggingface/hub``)."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return Path(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        if os.environ.get("HF_HUB_CACHE"):
            return Path(os.environ["HF_HUB_CACHE"]).expanduser()
        home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
        return Path(home).expanduser() / "hub"


def cached_hub_snapshot(repo_id: str, hub_cache: str | os.PathLike | None = None) -> Path | None:
    """The local snapshot folder of hub id ``repo_id`` that holds a ``config.json`` (the ``refs/main`` one,
    else any), or None; reads the cache only, never the network.

    The one lookup behind every model-name check (language models, encoders, cross-encoders).
    """
    if not isinstance(repo_id, str) or not repo_id or repo_id.count("/") > 1 or ".." in repo_id:
        return None
    repo = Path(hub_cache if hub_cache is not None else hub_cache_dir()).expanduser() / (
        "models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file():
        found = snapshots / ref.read_text().strip() / "config.json"
        if found.is_file():
            return found.parent
    return next((p.parent for p in sorted(snapshots.glob("*/config.json")) if p.is_file()), None)
