"""Atomic file and directory writes, checksums and manifests.

Everything attnsift writes to disk (indexes, run files, reports, model caches) goes through these
helpers, so an interrupted or failed write never leaves a half-written file under the final name:

- the new content is written to a hidden temporary beside the target, named
  ``.<name>.<pid>-<random>.tmp``, created with the user's umask (as an ordinary ``open``/``mkdir``
  would: a team can share indexes and model caches), and removed if the write fails;
- a finished file replaces the target with one ``rename``; a finished folder is swapped in with
  ``renameat2(RENAME_EXCHANGE)`` where the kernel and file system offer it, so there is no moment
  without a folder under the target's name (elsewhere: old folder renamed aside, new one renamed in,
  the old one put back if that fails, then deleted);
- temporaries left by killed runs (their pid no longer running on this machine) are deleted on the
  next write to the same target.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterator

from attnsift.errors import DataFormatError, IndexCorruptedError

MANIFEST = "manifest.json"


def _temp_name(path: Path, tag: str = "") -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{tag}{secrets.token_hex(4)}.tmp")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporaries of ``path`` left by runs that were killed.

    A temporary is ``.<name>.<pid>-<random>.tmp`` beside ``path``; it is stale when no process with
    that pid runs on this machine. Temporaries of live processes and of other targets are kept.

    Returns
    -------
    list of Path
        What was deleted.
    """
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)-[a-z]*[0-9a-f]{{8}}\.tmp$")
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary file beside ``path``; rename it onto ``path`` only if the block succeeds.

    The file gets the permissions an ordinary ``open`` would (``0o666`` less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    tmp = _temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_file`."""
    with atomic_file(path, "w") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` through :func:`atomic_file`."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, f"cannot swap {a} into {b}: {os.strerror(err)}")


def _swap_in(tmp: Path, path: Path) -> None:
    """Put the finished folder ``tmp`` under ``path``, replacing a folder there, then delete the old one."""
    if not path.exists():
        os.replace(tmp, path)
        return
    if _exchange(tmp, path):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        return
    old = _temp_name(path, "old")
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only if the block succeeds.

    An existing ``path`` stays whole until the new one is complete, then the two are swapped (see the
    module docstring) and the old one is deleted. The folder gets ``0o777`` less the umask.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    ValueError
        ``path`` exists and is not a directory.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a directory; choose another output path")
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    tmp = _temp_name(path)
    os.mkdir(tmp, 0o777)  # the umask applies
    try:
        yield tmp
        _swap_in(tmp, path)
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


def read_manifest(directory: str | Path, kind: str | None, verify: bool = True, *, what: str = "index",
                  fix: str = "rebuild the index") -> dict:
    """Read and check ``manifest.json``: the kind, and (``verify``) every file's size and checksum.

    Parameters
    ----------
    directory : str or Path
        The folder holding ``manifest.json``.
    kind : str or None
        The kind the manifest must record (None: any kind).
    verify : bool
        Check every listed file's size and sha256 (reads every byte once).
    what, fix : str
        How messages name the folder (``"index"``, ``"converted model"``) and what they tell the user to
        do about a damaged one.

    Raises
    ------
    IndexCorruptedError
        With one line naming the bad file and saying what to do.
    """
    directory = Path(directory)
    if not directory.exists():
        raise IndexCorruptedError(f"no {what} at {directory}: build one first (e.g. `attnsift index ...`)")
    mpath = directory / MANIFEST
    if not mpath.is_file():
        raise IndexCorruptedError(
            f"{directory} has no {MANIFEST}: it is not an attnsift {what} or its build was interrupted; {fix}"
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexCorruptedError(f"{mpath} is not valid JSON ({exc}); the {what} is corrupted, {fix}") from exc
    if not isinstance(manifest, dict) or (kind is not None and manifest.get("kind") != kind):
        got = manifest.get("kind") if isinstance(manifest, dict) else None
        raise IndexCorruptedError(
            f"{directory} holds a {got!r} {what}, but a {kind!r} {what} was asked for; point to the right folder or {fix}"
        )
    if verify:
        for rel, info in manifest.get("files", {}).items():
            p = directory / rel
            if not p.is_file():
                raise IndexCorruptedError(f"{what} file {p} is missing; the {what} is incomplete, {fix}")
            if p.stat().st_size != info["bytes"] or sha256_file(p) != info["sha256"]:
                raise IndexCorruptedError(
                    f"{what} file {p} does not match its checksum in {MANIFEST}: it was modified or corrupted; {fix}"
                )
    return manifest


def utf8_lines(path: str | Path, what: str = "data") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` of a UTF-8 text file (1-based, line endings kept), decoding line by
    line so that a bad byte is reported with its file, line and column.

    Raises
    ------
    DataFormatError
        ``FILE:LINE: byte 0x.. at column N is not UTF-8 ...``.
    """
    from attnsift.errors import DataFormatError

    path = Path(path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFormatError(
                    f"{path}:{lineno}: byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not UTF-8 "
                    f"({exc.reason}); {what} files must be UTF-8 text: re-encode the file or fix that line"
                ) from None


def json_object_line(line: str, where: str) -> dict:
    """Parse one line of a JSONL file as a JSON object; ``where`` is ``path:lineno`` for the message.

    Raises
    ------
    DataFormatError
        Not valid JSON, or not an object.
    """
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise DataFormatError(f"{where}: expected a JSON object per line, got {type(obj).__name__}")
    return obj
