"""MS MARCO passage as distributed: the official files in ``<data folder>/msmarco-passage/``.

Files read (plain, ``.gz``, or inside the official ``.tar.gz`` archives)::

    collection.tsv                 "pid<TAB>text", 8,841,823 lines (collection.tar.gz, collectionandqueries.tar.gz)
    queries.dev.small.tsv          "qid<TAB>text" (collectionandqueries.tar.gz); queries.dev.tsv (queries.tar.gz)
    qrels.dev.small.tsv            "qid 0 pid 1" (TREC qrels); qrels.dev.tsv
    top1000.dev.tsv / top1000.dev  "qid<TAB>pid<TAB>query<TAB>passage": the provided run ``top1000``
                                   (file order is rank order; top1000.dev.tar.gz is streamed, not unpacked)
    msmarco-test2019-queries.tsv(.gz), 2019qrels-pass.txt, msmarco-passagetest2019-top1000.tsv(.gz): TREC DL
    2019 over the full collection (split ``dl19``); the same with 2020 (split ``dl20``). The names with
    ``msmarco-passage-test20xx-queries.tsv`` are accepted too.

Splits: ``dev.small`` (also ``test``: 6,980 queries), ``dev`` (101,093 queries), ``dl19``, ``dl20``.

Archives and ``.gz`` files are unpacked once into the folder (or, read-only, the cache); the top1000
archive is streamed. The corpus streams (:class:`~attnsift.eval.datasets.msmarco_store.MsMarcoStore`:
nothing holds the 8.8M passages; ``get``/``subset`` read through an offset index built once); see
:mod:`.msmarco_store` for the index and the cheap corpus fingerprint.
"""
from __future__ import annotations

import gzip
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from attnsift.errors import DataFormatError, DatasetError
from attnsift.eval.datasets.base import Corpus, Dataset, DatasetInfo
from attnsift.eval.datasets.msmarco_store import COLLECTION, FOLDER, MsMarcoStore, build_offsets, find_file
from attnsift.types import Candidate, Query, Ranking, Run

__all__ = ["MsMarcoLoader", "MsMarcoStore", "MSMARCO", "SPLITS", "FOLDER", "read_queries", "read_top1000",
           "build_offsets"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Split:
    """The files of one split, each a tuple of accepted names (first found wins)."""

    name: str
    queries: tuple[str, ...]
    qrels: tuple[str, ...]
    run: tuple[str, ...]
    rel_level: int
    description: str


_DL = ("msmarco-test{y}-queries.tsv", "msmarco-passage-test{y}-queries.tsv")
SPLITS: dict[str, Split] = {
    "dev.small": Split("dev.small", ("queries.dev.small.tsv",), ("qrels.dev.small.tsv",),
                       ("top1000.dev.tsv", "top1000.dev"), 1,
                       "MS MARCO passage dev/small: 6,980 queries over the 8.8M-passage collection"),
    "dev": Split("dev", ("queries.dev.tsv",), ("qrels.dev.tsv",), ("top1000.dev.tsv", "top1000.dev"), 1,
                 "MS MARCO passage dev: 101,093 queries (55,578 judged) over the 8.8M-passage collection"),
    **{f"dl{y % 100}": Split(f"dl{y % 100}", tuple(n.format(y=y) for n in _DL), (f"{y}qrels-pass.txt",),
                             (f"msmarco-passagetest{y}-top1000.tsv",), 2,
                             f"TREC DL {y} passage over the full 8.8M-passage collection (grades 0-3, relevant >= 2)")
       for y in (2019, 2020)},
}
_SPLIT_NAMES = {"test": "dev.small", "dev.small": "dev.small", "dev-small": "dev.small", "dev_small": "dev.small",
                "small": "dev.small", "dev": "dev", "dl19": "dl19", "trec-dl-2019": "dl19", "2019": "dl19",
                "dl20": "dl20", "trec-dl-2020": "dl20", "2020": "dl20"}
_RUN_ARCHIVES = {"top1000.dev": "top1000.dev.tar.gz", "top1000.dev.tsv": "top1000.dev.tar.gz"}


def _split(split: str) -> Split:
    key = _SPLIT_NAMES.get(split.lower())
    if key is None:
        raise DatasetError(f"MS MARCO passage has no split {split!r}; use one of {', '.join(SPLITS)} ('test' = dev.small)")
    return SPLITS[key]


# ------------------------------------------------------------------------------------------ queries and runs
def _tsv_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    from attnsift.io import utf8_lines

    for lineno, text in utf8_lines(path, "MS MARCO"):
        line = text.rstrip("\r\n")
        if line.strip():
            yield lineno, line.split("\t")


def read_queries(path: Path, keep: dict | None = None) -> dict[str, Query]:
    """``qid<TAB>text`` lines, in file order (only ids in ``keep`` when given)."""
    out: dict[str, Query] = {}
    for lineno, f in _tsv_lines(path):
        if len(f) < 2 or not f[0].strip():
            raise DataFormatError(f"{path}:{lineno}: a queries line is 'qid<TAB>text', got {chr(9).join(f)[:200]!r}")
        qid = f[0].strip()
        if keep is not None and qid not in keep:
            continue
        if qid in out:
            raise DataFormatError(f"{path}:{lineno}: query id {qid!r} is listed twice; deduplicate the file")
        try:
            out[qid] = Query(qid, "\t".join(f[1:]).strip())
        except (TypeError, ValueError) as exc:
            raise DataFormatError(f"{path}:{lineno}: {exc}") from None
    return out


def _run_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Lines of a top1000 file: plain, ``.gz`` or the member of a ``.tar.gz`` (streamed, not unpacked)."""
    if path.name.endswith(".tar.gz"):
        with tarfile.open(path, "r|gz") as tf:
            for m in tf:
                if m.isfile() and Path(m.name).name in _RUN_ARCHIVES:
                    yield from enumerate(tf.extractfile(m), start=1)  # type: ignore[arg-type]
                    return
        raise DatasetError(f"{path} holds no top1000.dev file")
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        yield from enumerate(fh, start=1)


def read_top1000(path: str | Path, queries: dict[str, Query], name: str = "top1000") -> Run:
    """A top1000 file (``qid<TAB>pid<TAB>query<TAB>passage``) as a run over ``queries``.

    Ranks are the file order within each query (scores N, N-1, ..., 1); lines of other queries are skipped.
    """
    path = Path(path)
    per: dict[str, dict[str, None]] = {}
    for lineno, raw in _run_lines(path):
        f = raw.split(b"\t", 2)
        if len(f) < 2 or not f[0].strip() or not f[1].strip():
            if not raw.strip():
                continue
            raise DataFormatError(f"{path}:{lineno}: a top1000 line is 'qid<TAB>pid<TAB>query<TAB>passage', "
                                  f"got {raw[:120].decode('utf-8', 'replace')!r}")
        qid = f[0].decode("utf-8", "replace").strip()
        if qid not in queries:
            continue
        pid = f[1].decode("utf-8", "replace").strip()
        docs = per.setdefault(qid, {})
        if pid in docs:
            raise DataFormatError(f"{path}:{lineno}: passage {pid!r} is listed twice for query {qid!r}")
        docs[pid] = None
    return Run([Ranking(queries[q], tuple(Candidate(p, float(len(d) - i)) for i, p in enumerate(d)))
                for q, d in per.items()], name=name)


# ------------------------------------------------------------------------------------------ the loader
class MsMarcoLoader:
    """The official MS MARCO passage files (a :class:`~attnsift.eval.datasets.base.DatasetLoader`)."""

    name = "msmarco"

    def matches(self, path: Path) -> bool:
        """A folder holding collection.tsv or an archive of it."""
        return path.is_dir() and any((path / f).is_file() for f in (COLLECTION, "collection.tar.gz",
                                                                    "collectionandqueries.tar.gz"))

    def _files(self, path: Path, sp: Split, unpack: bool) -> dict[str, Path | None]:
        return {"queries": find_file(path, sp.queries, unpack), "qrels": find_file(path, sp.qrels, unpack)}

    def load(self, path: Path, split: str, info: DatasetInfo) -> Dataset:
        """Read the split's queries and qrels now; the collection streams (see :class:`MsMarcoStore`).

        Raises
        ------
        DatasetError
            A file the split needs is missing (named, with the names accepted).
        DataFormatError
            A malformed line (file:line).
        """
        from attnsift.trec import read_qrels

        sp = _split(split)
        if not self.matches(path):
            raise DatasetError(f"{path} has no collection.tsv (or collection.tar.gz, collectionandqueries.tar.gz): "
                               "place the official MS MARCO passage files there")
        missing = [f"{what} ({' or '.join(getattr(sp, what))})" for what, p in self._files(path, sp, False).items()
                   if p is None]
        if missing:
            raise DatasetError(f"{path} lacks the {sp.name} {', '.join(missing)}; place the official files there "
                               "(plain, .gz or in their .tar.gz)")
        files = self._files(path, sp, True)
        assert files["queries"] is not None and files["qrels"] is not None
        qrels = read_qrels(files["qrels"])
        queries = read_queries(files["queries"], keep=qrels)
        no_text = [q for q in qrels if q not in queries]
        if no_text:
            logger.warning("%s: %d judged query ids have no text in %s and are left out, e.g. %s", files["qrels"],
                           len(no_text), files["queries"].name, no_text[:3])
        runs: dict[str, Path] = {}
        run = find_file(path, sp.run, unpack=False) or next(
            (path / _RUN_ARCHIVES[n] for n in sp.run if n in _RUN_ARCHIVES and (path / _RUN_ARCHIVES[n]).is_file()), None)
        if run is not None:
            runs["top1000"] = run
        return Dataset(
            name=info.name, corpus=Corpus(MsMarcoStore(path)), queries=queries,
            qrels={q: qrels[q] for q in queries}, runs=runs, rel_level=max(info.rel_level, sp.rel_level),
            source=f"local:{path}", description=info.description or sp.description, split=sp.name,
            run_aliases={}, read_from={"queries": files["queries"], "qrels": files["qrels"]},
            run_readers={"top1000": read_top1000} if runs else {},
        )

    def summary(self, path: Path, split: str = "test") -> dict[str, Any]:
        """``available``, ``docs`` (known once the offset index is built, else None), ``queries`` (judged)."""
        from attnsift.trec import read_qrels

        try:
            sp = _split(split)
        except DatasetError:
            return {"available": False, "docs": None, "queries": None}
        files = self._files(path, sp, False)
        nq = None
        if files["qrels"] is not None and files["qrels"].name.endswith((".tsv", ".txt")):
            try:
                nq = len(read_qrels(files["qrels"]))
            except (DataFormatError, OSError):
                nq = None
        docs = MsMarcoStore(path).known_len if self.matches(path) else None
        return {"available": self.matches(path) and None not in files.values(), "docs": docs, "queries": nq}


MSMARCO = MsMarcoLoader()
