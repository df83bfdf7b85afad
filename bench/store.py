"""Where ``bench quality`` keeps its results: content keys, one folder per key, the lock, the progress file.

Layout of an ``--out`` folder::

    .bench.lock                                   advisory lock of the writer (its pid inside)
    <dataset>/<system-slug>/<key>/config.json     what the key is made of (data, models, spec, metrics)
    <dataset>/<system-slug>/<key>/progress.jsonl  one line per finished query of this key, any query set
    <dataset>/<system-slug>/<key>/<N>q-<hash>/run.trec, metrics.json   one query set's run and metrics

``<key>`` is the first 12 hex characters of a hash of the content fingerprints of everything that makes
the numbers (corpus, queries, qrels, provided run or model files, the system spec, the metrics and the
relevance level): another key never reuses and never deletes, it gets its own folder. The query set is
not part of the key, so a subset of finished queries is served from the progress of a superset.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator

from attnsift.errors import AttnsiftError
from attnsift.fingerprint import combine, file_fingerprint, folder_fingerprint
from attnsift.io import atomic_write_json, atomic_write_text

__all__ = ["FORMAT_VERSION", "LOCK_FILE", "BenchBusyError", "bench_lock", "stage_fingerprint", "result_key",
           "key_folder", "query_set_folder", "read_progress", "append_progress"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 3  # 2: the spec's top_k is called depth; 3: results keyed by content, one folder per key
LOCK_FILE = ".bench.lock"
KEY_CHARS = 12


class BenchBusyError(AttnsiftError, BlockingIOError):
    """Another process is writing the same bench folder (an OSError: the CLI prints it as one line, exit 2)."""


@contextlib.contextmanager
def bench_lock(folder: Path) -> Iterator[None]:
    """Hold an advisory lock (``fcntl.flock``) on ``folder/.bench.lock`` for the block.

    Raises
    ------
    BenchBusyError
        Another process holds it (the message names the folder and that process's pid).
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fh = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            fh.seek(0)
            pid = fh.read().strip() or "?"
            raise BenchBusyError(
                f"another attnsift bench is writing {folder} (pid {pid}); wait for it or use another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        fh.close()


def _provided(ds: Any, name: str | None) -> Path | None:
    runs, aliases = getattr(ds, "runs", {}), getattr(ds, "run_aliases", {})
    return runs.get(aliases.get(name, name)) if name is not None else None


def stage_fingerprint(stage: Any, ds: Any, default_models: dict[str, str], first: bool) -> str | None:
    """A content fingerprint of what a stage reads besides the data set: a run file or a model's files.

    Parameters
    ----------
    stage : StageSpec or None
        ``name`` and ``model``. ``run:<name or file>``: that run file; a first stage the data set
        provides a run for (DL19's ``bm25``): that run file; a model-based stage: its model (default
        from ``default_models``; hybrid: its dense part's encoder; a reranker with no default, such as
        the cross-encoder, the model it names); anything else: None.
    ds : Dataset
        For its provided runs.
    default_models : dict
        Stage name -> default model (the registry's).
    first : bool
        Whether ``stage`` is the first stage (only a first stage can be a provided run).

    A model given as a local file or folder, an alias of an offline model package, or a hub id in the
    local Hugging Face cache is hashed file by file (cached by size and mtime); a hub id that is not
    on this machine is keyed by its name only.
    """
    if stage is None:
        return None
    if first:
        run = stage.model if stage.name == "run" else stage.name
        path = Path(run).expanduser() if stage.name == "run" and Path(run).expanduser().is_file() else _provided(ds, run)
        if path is not None:
            return combine("run", file_fingerprint(path))
        if stage.name == "run":
            return None  # not a run of this data set: first_stage says so
    # hybrid's encoder is its dense part's
    model_stage = "dense" if first and stage.name == "hybrid" else stage.name
    if model_stage not in default_models and (first or stage.model is None):
        return None  # a reranker without a default model (cross-encoder) is keyed by the model it names
    name = stage.model or default_models[model_stage]
    location = name
    if not first:
        from attnsift.rerank.llm import ALIASES, resolve_gguf

        if name in ALIASES:
            return combine("model", name, file_fingerprint(resolve_gguf(name)))
    else:
        from attnsift.retrieval.encoders import resolve_model

        location = resolve_model(name)[1]
    path = Path(location).expanduser()
    if path.exists():
        return combine("model", folder_fingerprint(path))
    try:
        from huggingface_hub import snapshot_download

        snapshot = snapshot_download(location, local_files_only=True)
    except Exception:  # not in the local cache (or not a hub id): loading will say so
        return combine("model", name, None)
    return combine("model", name, folder_fingerprint(snapshot))


def result_key(fields: dict[str, Any]) -> str:
    """The full key (64 hex characters) of a result made from ``fields`` (JSON values)."""
    return combine("attnsift-bench", FORMAT_VERSION, fields)


def key_folder(system_folder: Path, key: str, fields: dict[str, Any]) -> Path:
    """The folder of ``key`` under ``system_folder``, with its ``config.json`` (written once).

    Raises
    ------
    RuntimeError
        The folder's config.json names another key (a 48-bit prefix collision: practically never).
    """
    folder = system_folder / key[:KEY_CHARS]
    config = folder / "config.json"
    if config.is_file():
        try:
            saved = json.loads(config.read_text(encoding="utf-8")).get("key")
        except (ValueError, OSError, AttributeError):
            saved = None
        if saved == key:
            return folder
        if saved is not None:
            raise RuntimeError(f"{folder} holds results of key {saved}, not {key}; use another --out")
    atomic_write_json(config, {"format": FORMAT_VERSION, "key": key, **fields})
    return folder


def query_set_folder(folder: Path, query_ids: list[str]) -> Path:
    """``<N>q-<hash>``: where one query set's run and metrics go inside a key folder."""
    return folder / f"{len(query_ids)}q-{combine(query_ids)[:8]}"


_QID = re.compile(rb'"qid"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _check_record(rec: Any) -> tuple[str, list, float]:
    qid, docs, secs = rec["qid"], rec["docs"], float(rec["seconds"])
    if not isinstance(qid, str) or not isinstance(docs, list):
        raise ValueError("qid must be a string and docs a list")
    for d in docs:
        if not (isinstance(d, list) and len(d) == 2 and isinstance(d[0], str) and isinstance(d[1], (int, float))):
            raise ValueError("docs must be [doc id, score] pairs")
    return qid, docs, secs


def read_progress(path: Path) -> dict[str, dict]:
    """The finished queries of ``progress.jsonl``: ``{qid: {"docs", "seconds"}}``.

    A damaged line (torn by an interruption, or corrupted) costs that query only: it is dropped with a
    warning naming the file, the line number and the query id when readable, the file is rewritten
    without it (atomically), and the query is computed again.
    """
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    good: list[bytes] = []
    bad = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("partial last line (an interrupted write)")
                qid, docs, secs = _check_record(json.loads(raw))
            except (ValueError, KeyError, TypeError) as exc:
                bad += 1
                m = _QID.search(raw)
                who = f"query {m.group(1).decode('utf-8', 'replace')!r}" if m else "query id unreadable"
                log.warning("%s line %d: damaged (%s; %s): that query is computed again", path, lineno,
                            str(exc)[:80], who)
                continue
            if qid not in done:
                done[qid] = {"docs": docs, "seconds": secs}
                good.append(raw)
    if bad:
        atomic_write_text(path, b"".join(good).decode("utf-8"))
    return done


def append_progress(fh: Any, qid: str, docs: list, seconds: float) -> None:
    """Write one finished query to an open ``progress.jsonl`` and make it durable (flush + fsync)."""
    fh.write(json.dumps({"qid": qid, "docs": docs, "seconds": seconds}) + "\n")
    fh.flush()
    os.fsync(fh.fileno())
