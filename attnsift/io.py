"""Atomic file and directory writes, checksums and manifests.

Everything attnsift writes to disk (indexes, run files, reports, model caches) goes through these
helpers, so an interrupted or failed write never leaves a half-written file under the final name.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from attnsift.errors import IndexCorruptedError

MANIFEST = "manifest.json"


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary file beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600; give the final file the permissions an ordinary open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_file(path, "w") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only if the block succeeds.

    An existing ``path`` is kept until the new one is complete (then moved aside and deleted).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a directory; choose another output path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def write_manifest(directory: str | Path, kind: str, **fields: Any) -> dict:
    """Write ``manifest.json`` in ``directory`` with a checksum of every other file in it."""
    directory = Path(directory)
    files = {
        p.relative_to(directory).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    from attnsift._version import __version__

    manifest = {"kind": kind, "attnsift_version": __version__, **fields, "files": files}
    atomic_write_json(directory / MANIFEST, manifest)
    return manifest


def read_manifest(directory: str | Path, kind: str, verify: bool = True) -> dict:
    """Read and check ``manifest.json``: the kind, and (``verify``) every file's size and checksum.

    Raises
    ------
    IndexCorruptedError
        With a message naming the bad file and saying to rebuild the index.
    """
    directory = Path(directory)
    if not directory.exists():
        raise IndexCorruptedError(f"no index at {directory}: build one first (e.g. `attnsift index ...`)")
    mpath = directory / MANIFEST
    if not mpath.is_file():
        raise IndexCorruptedError(
            f"{directory} has no {MANIFEST}: it is not an attnsift index or its build was interrupted; rebuild it"
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexCorruptedError(f"{mpath} is not valid JSON ({exc}); the index is corrupted, rebuild it") from exc
    if manifest.get("kind") != kind:
        raise IndexCorruptedError(
            f"{directory} holds a {manifest.get('kind')!r} index, but a {kind!r} index was asked for; "
            "point to the right folder or rebuild"
        )
    if verify:
        for rel, info in manifest.get("files", {}).items():
            p = directory / rel
            if not p.is_file():
                raise IndexCorruptedError(f"index file {p} is missing; the index is incomplete, rebuild it")
            if p.stat().st_size != info["bytes"] or sha256_file(p) != info["sha256"]:
                raise IndexCorruptedError(
                    f"index file {p} does not match its checksum in {MANIFEST}: it was modified or corrupted; rebuild the index"
                )
    return manifest
