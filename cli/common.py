"""What every command group of the CLI shares (typer only at import time).

:func:`guard` turns user errors and every ``OSError`` into one ``error: ...`` line and exit code 2;
:func:`check_output` checks an output path before any work starts; :func:`print_json` never prints NaN.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import typer

USER_ERRORS = (ValueError, TypeError, ImportError, FileNotFoundError, FileExistsError, KeyError)

log = logging.getLogger("attnsift")

_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space there or choose another output folder, then rerun",
    errno.EDQUOT: "the disk quota is exhausted: free space there or choose another output folder, then rerun",
    errno.EACCES: "permission denied: choose a folder you can write to, or fix its permissions",
    errno.EPERM: "operation not permitted: choose a folder you can write to, or fix its permissions",
    errno.EROFS: "the file system is read-only: choose a writable output folder",
    errno.EISDIR: "a folder is in the way where a file is expected: give a file path",
    errno.ENOTDIR: "a file is in the way where a folder is expected: give another path",
}


def fail(message: str, code: int = 2) -> "typer.Exit":
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def os_error_message(exc: OSError) -> str:
    """One line for an ``OSError``: the path, what the system said and what to do."""
    where = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    what = exc.strerror or str(exc)
    hint = _OS_HINTS.get(exc.errno or -1)
    return f"{where + ': ' if where else ''}{what}" + (f" ({hint})" if hint else "")


@contextlib.contextmanager
def deprecations_as_lines() -> Iterator[None]:
    """Inside the block, every :class:`~attnsift.errors.AttnsiftDeprecationWarning` is one
    ``warning: <message>`` line on stderr, shown at once and once per message (never swallowed by the
    "once per code location" default); other warnings go to the previous handler."""
    from attnsift.errors import AttnsiftDeprecationWarning

    seen: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("always", AttnsiftDeprecationWarning)
        previous = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
            if issubclass(category, AttnsiftDeprecationWarning):
                text = str(message)
                if text not in seen:
                    seen.add(text)
                    warn(text)
                return
            previous(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def guard(fn):
    """Turn user errors (ValueError, TypeError, ImportError, FileNotFoundError, FileExistsError, KeyError)
    and every other ``OSError`` (full disk, permission, read-only folder) into a one-line ``error: ...``
    on stderr and exit code 2; ``-v`` logs the traceback of an OSError. Deprecation warnings are
    ``warning: ...`` lines (:func:`deprecations_as_lines`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with deprecations_as_lines():
                return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except USER_ERRORS as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise fail(str(msg)) from None
        except OSError as exc:
            log.info("the OSError behind the error below", exc_info=True)
            raise fail(os_error_message(exc)) from None

    return wrapper


def print_json(obj: Any) -> None:
    """Print ``obj`` as JSON; a NaN or infinity raises ValueError instead of printing invalid JSON."""
    typer.echo(json.dumps(obj, indent=2, default=float, allow_nan=False))


def _existing_ancestor(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output(path: Path, option: str, *, folder: bool = False, min_free_bytes: int = 0) -> Path:
    """Check, before any work, that ``path`` can be written as a file (or, ``folder=True``, a folder).

    The path must not be a folder where a file is expected (or a file where a folder is), the nearest
    existing ancestor must be a folder this process can create files in (a probe file is created and
    removed there), and, when ``min_free_bytes`` is given, that folder's disk must have that much free.

    Parameters
    ----------
    path : Path
        The output path as given.
    option : str
        The option that named it (``--save-run``), for the message.
    folder : bool
        Whether a folder is expected (``index --out``, ``explain --out``) rather than a file.
    min_free_bytes : int
        An estimate of what will be written.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        Any of the above, in one line naming the path, the option and what to do.
    """
    path = Path(path)
    if not folder and path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file path, e.g. {path / 'run.trec'}")
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file, but a folder is expected there; give a folder path")
    base = _existing_ancestor(path if folder else path.parent)
    if not base.is_dir():
        raise ValueError(f"{option} {path}: {base} is a file, so nothing can be created under it; "
                         "give a path whose parent is a folder")
    probe_error: OSError | None = None
    if not os.access(base, os.W_OK | os.X_OK):
        probe_error = PermissionError(errno.EACCES, "permission denied")
    else:
        try:
            fd, probe = tempfile.mkstemp(prefix=".attnsift-probe-", dir=base)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            probe_error = exc
    if probe_error is not None:
        what = probe_error.strerror or str(probe_error)
        raise ValueError(f"{option} {path}: cannot create files in {base} ({what}); "
                         "choose a folder you can write to")
    if min_free_bytes > 0:
        free = shutil.disk_usage(base).free
        if free < min_free_bytes:
            raise ValueError(f"{option} {path}: about {_size(min_free_bytes)} will be written but only {_size(free)} is "
                             f"free on the disk of {base}; free space or choose another folder")
    return path


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def run_file_bytes(num_queries: int, per_query: int) -> int:
    """A generous estimate of a TREC run file's size: 64 bytes per line."""
    return 64 * max(num_queries, 0) * max(per_query, 0)


def warn(message: str) -> None:
    """A ``warning: ...`` line on stderr."""
    typer.echo(f"warning: {message}", err=True)


def nonempty_queries(dataset: Any) -> Any:
    """``dataset`` when it has queries; otherwise a ValueError saying which file to fill."""
    if not dataset.queries:
        raise ValueError(f"data set {dataset.name} ({dataset.split}) has no queries with judgements: nothing to run or "
                         f"evaluate; check its queries file and its qrels for split {dataset.split!r} ({dataset.source})")
    return dataset


def nonempty_corpus(dataset: Any) -> Any:
    """``dataset`` when its corpus holds a document (only the first is read); otherwise a ValueError."""
    if next(iter(dataset.corpus.iter_documents()), None) is None:
        raise ValueError(f"the corpus of {dataset.name} ({dataset.corpus.source}) is empty: there is nothing to index "
                         "or retrieve; check the corpus file")
    return dataset


def warn_unknown_judged(dataset: Any, max_bytes: int = 512 * 2**20) -> int:
    """Warn when the qrels judge documents the corpus lacks; returns how many (0 when not checked).

    Checked only where the corpus ids are cheap to read: a corpus already in memory, or a local
    ``corpus.jsonl`` of at most ``max_bytes`` (one streaming pass over its ids).
    """
    from attnsift.eval.datasets.base import MemoryStore

    store = getattr(dataset.corpus, "store", None)
    path = getattr(store, "path", None)
    loaded = isinstance(store, MemoryStore) or getattr(store, "loaded", False)
    if not loaded and (path is None or not Path(path).is_file() or Path(path).stat().st_size > max_bytes):
        return 0
    judged = {d for docs in dataset.qrels.values() for d in docs}
    if not judged:
        return 0
    found = dataset.corpus.subset(judged)
    missing = judged - set(found)
    if missing:
        pairs = sum(1 for docs in dataset.qrels.values() for d in docs if d in missing)
        warn(f"the qrels of {dataset.name} ({dataset.split}) judge {len(missing)} documents ({pairs} judgements) that "
             f"the corpus ({dataset.corpus.source}) does not hold, e.g. {sorted(missing)[:3]}; they can never be "
             "retrieved: are the qrels and the corpus from the same data set?")
    return len(missing)


def check_spec_options(spec: Any) -> None:
    """Check a bench spec's stage options against the stages' configs, and its reranker's model by name
    (no model or index is built).

    Raises
    ------
    ValueError
        An unknown option or a value its config rejects, or a reranker model that cannot be found (or is
        missing where the reranker has no default), naming the spec.
    """
    from attnsift.registry import check_options

    from attnsift.registry import check_model

    where = f"system spec {spec.text!r}"
    try:
        if spec.first.name != "run":
            check_options("retriever", spec.first.name, spec.first.options)
        if spec.reranker is not None:
            check_options("reranker", spec.reranker.name, spec.reranker.options)
            check_model("reranker", spec.reranker.name, spec.reranker.model)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(device: str | None, option: str = "--device", local: bool = True) -> str | None:
    """Check a device name before any work: ``auto`` (CUDA when available, else the CPU), ``cpu``,
    ``cuda``, ``cuda:N`` (or ``mps``); a CUDA device must exist on this machine. None (the default:
    CUDA when available) passes.

    Returns
    -------
    str or None
        The name, stripped and lower-cased (``auto`` stays ``auto``: the library resolves it where a
        model loads, :func:`attnsift.config.resolve_device`; a stage that runs no model ignores it).

    ``local=False`` (the models run on other machines: ``--engine ray``) checks the spelling only.

    Raises
    ------
    ValueError
        Another spelling, or a CUDA device this machine lacks (the message says what there is).
    """
    if device is None:
        return None
    if not isinstance(device, str) or not _DEVICE.match(device.strip().lower()):
        raise ValueError(f"{option} {device!r} is not a device; give auto, cpu, cuda or cuda:N (e.g. cuda:1)")
    device = device.strip().lower()
    if device.startswith("cuda") and local:
        try:
            import torch
        except ImportError:
            raise ValueError(f"{option} {device}: torch is not installed, so no CUDA device can be used; "
                             "use --device cpu (or auto) or install torch with CUDA") from None
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            have = f"{count} CUDA device(s) (cuda:0..cuda:{count - 1})" if count else "no CUDA device"
            raise ValueError(f"{option} {device}: this machine has {have}; use --device cpu or auto"
                             + (" or one of those" if count else ""))
    return device


def concrete_device(device: str | None) -> str | None:
    """``auto`` as the device it means on this machine (``cuda`` or ``cpu``); other names unchanged."""
    if device != "auto":
        return device
    from attnsift.config import resolve_device

    return str(resolve_device("auto"))


ENGINE_HELP = "Where the reranking runs: local (this process) or ray (a pool of Ray workers, one model each)."
RAY_ADDRESS_HELP = ("A Ray cluster's address (HOST:PORT of `ray start --head`, ray://HOST:10001; default $RAY_ADDRESS, "
                    "else a local Ray starts). Only with --engine ray.")
ENGINE_OPTION_HELP = ("Ray engine option (repeatable): num_workers=, num_cpus_per_worker=, num_gpus_per_worker=, "
                      "batch_size=, max_retries=.")
_ENGINE_INTS = ("num_workers", "batch_size", "max_retries", "threads_per_worker")
_ENGINE_FLOATS = ("num_cpus_per_worker", "num_gpus_per_worker")


def make_engine(engine: str | None, ray_address: str | None, engine_option: list[str] | None) -> Any:
    """The engine of ``--engine``, ``--ray-address`` and ``--engine-option``, checked before any work
    (name, address form, options, Ray installed); None for the local engine (the pipeline's own loop).

    Raises
    ------
    ValueError
        An unknown engine or option, a value of the wrong type, a malformed address, or Ray settings
        with the local engine.
    ImportError
        ``--engine ray`` without Ray (the message names ``pip install 'attnsift[ray]'``).
    """
    from attnsift.config import parse_option_strings

    options: dict[str, Any] = {}
    for key, value in parse_option_strings(engine_option).items():
        if key not in _ENGINE_INTS + _ENGINE_FLOATS:
            raise ValueError(f"unknown --engine-option {key!r}; accepted: {', '.join(_ENGINE_INTS + _ENGINE_FLOATS)}")
        try:
            options[key] = int(value) if key in _ENGINE_INTS else float(value)
        except ValueError:
            kind = "an integer" if key in _ENGINE_INTS else "a number"
            raise ValueError(f"--engine-option {key}={value!r}: expected {kind}") from None
    name = (engine or "local").strip().lower()
    if name == "local" and (ray_address is not None or options):
        given = "--ray-address" if ray_address is not None else "--engine-option"
        raise ValueError(f"{given} is for --engine ray; add --engine ray or drop {given}")
    from attnsift.engines import make_engine as _make

    made = _make(name, ray_address, **options)
    return None if name == "local" else made.probe()
