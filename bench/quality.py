"""Quality benchmarks over many data sets and systems: resumable, with tables, JSON and plots.

Layout of ``out_dir`` (see :mod:`attnsift.bench.store` for the keys)::

    <dataset>/<system-slug>/<key>/config.json             what the key is made of
    <dataset>/<system-slug>/<key>/progress.jsonl          one line per finished query (ranking + seconds)
    <dataset>/<system-slug>/<key>/<N>q-<hash>/run.trec    one query set's final run, written atomically
    <dataset>/<system-slug>/<key>/<N>q-<hash>/metrics.json  its metrics; its presence marks completion
    results.json, results.md, quality_vs_cost.png, per_query_delta.png

Results are keyed by the content of what made them (corpus, queries, qrels, the provided run or model
files, the system spec, the metrics): a changed setting or file gets a folder of its own and deletes
nothing, and a subset of finished queries is read from the progress of a larger query set. An
interrupted run loses at most the query in flight; a damaged progress line costs its query only. One
writer at a time: a second bench on the same ``out_dir`` stops at once (:func:`~attnsift.bench.store.bench_lock`).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from attnsift.bench.specs import SystemSpec
from attnsift.bench.stages import ENCODER_STAGES, SavedIndex, load_saved_index, match_indexes, read_saved_index
from attnsift.bench.store import FORMAT_VERSION  # noqa: F401 (re-exported: the format of the results)
from attnsift.bench.store import (append_progress, bench_lock, key_folder, query_set_folder, read_progress,
                                  result_key, stage_fingerprint)
from attnsift.io import atomic_write_json, atomic_write_text
from attnsift.pipeline import Pipeline, first_stage
from attnsift.trec import write_run
from attnsift.types import Candidate, Ranking, Run

log = logging.getLogger(__name__)

BENCH_METRICS = ("nDCG@10", "MRR@10", "R@100")


class _Interrupted(Exception):
    """Raised by the test hook ``stop_after`` to simulate an interruption."""


def _first_stage(ds: Any, spec: SystemSpec, cache: dict, progress: bool | None = None, device: str | None = None,
                 saved: SavedIndex | None = None) -> tuple[Run, float]:
    """The first-stage run of ``spec`` on ``ds`` and its search seconds per query, through the Pipeline.

    Cached per data set (source, name, split), first stage (or the saved index standing in for it),
    ``first_stage_k`` and query set, so the systems that share a first stage share one retrieval (and
    ``bm25`` and ``bm25+icr`` rerank the same candidates).
    """
    key = (ds.source, ds.name, ds.split, str(spec.first), saved and saved.identity, spec.first_stage_k,
           tuple(ds.queries))
    if key not in cache:
        run = spec.first.model if spec.first.name == "run" else None
        if saved is not None:
            stage = load_saved_index(saved, device=device)
        else:
            # --device is for the stages that run a model: the encoder here, not BM25 or a provided run
            stage = first_stage(ds, spec.first.name, run=run, encoder=None if run else spec.first.model,
                                options=dict(spec.first.options), progress=progress,
                                device=device if spec.first.name in ENCODER_STAGES else None)
        pipe = Pipeline(stage, first_stage_k=spec.first_stage_k)
        results = list(pipe.stream(ds.queries))
        spq = sum(r.first_stage_seconds for r in results) / max(len(results), 1)
        cache[key] = (Run((r.ranking for r in results), name=pipe.name), spq)
    return cache[key]


@dataclass
class SystemResult:
    dataset: str
    spec: SystemSpec
    report: Any  # EvalReport
    first_stage_report: Any | None
    seconds_per_query: float
    resumed_queries: int = 0
    skipped: bool = False
    folder: Path | None = None  # the query set's folder (run.trec, metrics.json)


@dataclass
class BenchResult:
    out_dir: Path
    datasets: list[str]
    systems: list[SystemSpec]
    results: dict[tuple[str, str], SystemResult] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def get(self, dataset: str, system: SystemSpec | str) -> SystemResult:
        label = system.label if isinstance(system, SystemSpec) else SystemSpec.parse(system).label
        return self.results[(dataset, label)]


def _share_masses(reranker: Any, rerankers: dict) -> Any:
    """Give every ICR system of one bench the same MassCache, so systems that differ only in how the
    masses are scored (``calibration``, fusion, a head profile over the same layers) run each prompt once.
    The cache is keyed on everything that shapes the forward passes, so sharing never mixes systems."""
    from attnsift.rerank.icr import ICRReranker

    if isinstance(reranker, ICRReranker):
        reranker.mass_cache = rerankers.setdefault(("icr-mass-cache", reranker.model_name), reranker.mass_cache)
    return reranker


def key_fields(ds: Any, fingerprints: dict[str, str], spec: SystemSpec, metrics: Sequence[str],
               saved: SavedIndex | None = None, device: str | None = None) -> dict[str, Any]:
    """What a result of ``spec`` on ``ds`` is made of (the query set aside): content fingerprints of the
    data (``fingerprints``: :meth:`Dataset.fingerprints`), of the provided run, saved index (``saved``)
    or models (the first stage's encoder included), and the settings (``device`` when one was chosen)."""
    from attnsift.fingerprint import combine
    from attnsift.registry import DEFAULT_MODELS

    first_files = (combine("index", saved.identity) if saved is not None
                   else stage_fingerprint(spec.first, ds, DEFAULT_MODELS, first=True))
    fields = {"dataset": fingerprints, "rel_level": ds.rel_level, "system": spec.to_dict(),
              "first_stage_files": first_files,
              "reranker_files": stage_fingerprint(spec.reranker, ds, DEFAULT_MODELS, first=False),
              "metrics": list(metrics)}
    if device is not None:
        fields["device"] = device
    return fields


def index_for(spec: SystemSpec, indexes: Sequence[SavedIndex]) -> SavedIndex | None:
    """The saved index that stands in for ``spec``'s first stage: one of the same kind, when the spec sets
    no first-stage option (an index keeps how it was built) and names no other encoder than the index's."""
    if spec.first.options:
        return None
    for saved in indexes:
        if saved.kind == spec.first.name and (spec.first.model is None or spec.first.model == saved.encoder):
            return saved
    return None


def _saved(path: Path, key: str, q_ids: list[str]) -> dict | None:
    """The metrics saved at ``path`` when they are whole and of this key and query set, else None."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved["key"] == key and saved["queries"] == q_ids:
            return saved
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, OSError) as exc:
        log.warning("%s unreadable (%s): computed again from the progress file", path, exc)
        return None
    log.warning("%s belongs to another key or query set: computed again", path)
    return None


def _run_system(ds: Any, spec: SystemSpec, folder: Path, fields: dict[str, Any], metrics: Sequence[str],
                cache: dict, rerankers: dict, progress: bool | None, stop_after: int | None,
                device: str | None = None, index: SavedIndex | None = None, engine: Any = None) -> SystemResult:
    from attnsift.eval.metrics import evaluate
    from attnsift.eval.report import EvalReport
    from attnsift.registry import build_reranker

    queries = list(ds.queries.values())
    q_ids = [q.id for q in queries]
    key = result_key(fields)
    folder = key_folder(folder, key, fields)
    out = query_set_folder(folder, q_ids)
    metrics_path, progress_path = out / "metrics.json", folder / "progress.jsonl"

    first_run, first_spq = _first_stage(ds, spec, cache, progress=progress, device=device, saved=index)
    first_report = None
    if spec.reranker is not None:
        first_report = evaluate(first_run, ds.qrels, metrics=metrics, rel_level=ds.rel_level,
                                name=str(spec.first), queries=q_ids)

    saved = _saved(metrics_path, key, q_ids)
    if saved is not None:
        report = EvalReport.from_dict(saved["report"])
        return SystemResult(ds.name, spec, report, first_report, saved["seconds_per_query"], skipped=True, folder=out)

    done = read_progress(progress_path)
    resumed = sum(q in done for q in q_ids)
    todo = [q for q in queries if q.id not in done]
    if todo:
        reranker = None
        if spec.reranker is not None and engine is not None:
            from attnsift.engines.recipe import RerankerRecipe

            # The engine's workers build the model from the recipe; nothing loads here.
            reranker = RerankerRecipe(spec.reranker.name, spec.reranker.model, dict(spec.reranker.options), device)
        elif spec.reranker is not None:
            rkey = str(spec.reranker)
            if rkey not in rerankers:
                on = {"device": device} if device is not None else {}
                rerankers[rkey] = _share_masses(build_reranker(spec.reranker.name, model=spec.reranker.model,
                                                               options=dict(spec.reranker.options), **on), rerankers)
            reranker = rerankers[rkey]
        # The cached first-stage run stands in for the first stage: the systems sharing it rerank the same
        # candidates, and its search seconds per query are added to each query's reranking seconds.
        pipe = Pipeline(first_run, reranker, first_stage_k=spec.first_stage_k, depth=spec.depth,
                        corpus=ds.corpus if reranker is not None else None)
        from attnsift.progress import Estimator, bar

        # With an engine, results are recorded in the order they come back (a stop loses only those in flight).
        items: Iterable = bar(pipe.stream(todo, progress=False, engine=engine, ordered=engine is None), total=len(todo),
                              desc=f"{ds.name} {spec.label}", unit="q", progress=progress)
        # One line when this system will take long on this machine (measured on its first queries).
        dev = getattr(reranker, "device", None)
        estimate = Estimator(len(todo), "queries", progress=progress if reranker is not None else False,
                             device=None if dev is None else str(dev),
                             hint=f"system {spec.label} on {ds.name}; --max-queries, the spec's depth= or max_words= "
                                  "shorten it, and a rerun resumes where it stopped")
        with open(progress_path, "a", encoding="utf-8") as fh:
            for n, res in enumerate(items):
                if stop_after is not None and n >= stop_after:
                    raise _Interrupted(f"stopped after {n} queries")
                # rerank_seconds is the scoring's compute, also when served from a pass shared with another
                # system (ICR's calibrations): the cost of the system run alone.
                secs = first_spq + res.rerank_seconds
                estimate.observe(secs)
                if res.query.id in done:  # written once, whatever an engine's retries returned
                    continue
                docs = [[c.doc_id, c.score] for c in res.ranking.candidates]
                append_progress(fh, res.query.id, docs, secs)
                done[res.query.id] = {"docs": docs, "seconds": secs}

    run = Run((Ranking(q, tuple(Candidate(d, s) for d, s in done[q.id]["docs"])) for q in queries), name=spec.label)
    write_run(run, out / "run.trec", tag=spec.slug)
    report = evaluate(run, ds.qrels, metrics=metrics, rel_level=ds.rel_level, name=spec.label, queries=q_ids)
    spq = sum(done[q.id]["seconds"] for q in queries) / max(len(queries), 1)
    atomic_write_json(metrics_path, {"key": key, "queries": q_ids, "seconds_per_query": spq,
                                     "report": report.to_dict()})
    return SystemResult(ds.name, spec, report, first_report, spq, resumed_queries=resumed, folder=out)


def run_quality_bench(
    datasets: Sequence[str],
    systems: Sequence[str | SystemSpec],
    out_dir: str | Path,
    max_queries: int | None = None,
    metrics: Sequence[str] = BENCH_METRICS,
    progress: bool | None = None,
    plots: bool = True,
    stop_after: int | None = None,
    on_result: Callable[[SystemResult], None] | None = None,
    indexes: Sequence[str | Path] = (),
    device: str | None = None,
    split: str = "test",
    engine: Any = None,
) -> BenchResult:
    """Run every system on every data set, resumably; write tables, JSON and plots into ``out_dir``.

    Parameters
    ----------
    datasets : names for :func:`attnsift.eval.datasets.load_dataset`
    systems : spec strings (see :mod:`attnsift.bench.specs`) or parsed specs
    out_dir : folder for runs, metrics and reports (created)
    max_queries : only the first N queries of each data set (file order), the same for every system
    progress : one line per system and data set on stderr; None: the process setting (:mod:`attnsift.progress`)
    stop_after : testing hook, raise after this many newly computed queries (simulates an interruption)
    indexes : saved index folders (``attnsift index``); each is matched to the listed data set whose corpus it
        was built on, and stands in for the first stage of the specs of its kind (see :func:`index_for`)
    device : where the rerankers' models and the encoders run (``auto``, ``cpu``, ``cuda``, ``cuda:1``; default:
        CUDA when available); when given, part of the results' key (``auto`` as the device it resolves to)
    split : the qrels split of every data set
    engine : where the reranking runs (an :class:`attnsift.engines.Engine`, e.g. ``RayEngine``; default here);
        the results, and so their keys, are the same on every engine, so a run resumes across engines

    Raises
    ------
    ValueError
        Before any work: a spec listed twice, a reranker model that cannot be found (or none for the
        cross-encoder), no data set, a data set that cannot be loaded, or an index that matches none of
        the data sets.
    """
    from attnsift.eval.datasets import load_dataset
    from attnsift.registry import check_model
    from attnsift.types import check_k

    if max_queries is not None:
        check_k(max_queries, "max_queries")
    specs = [s if isinstance(s, SystemSpec) else SystemSpec.parse(s) for s in systems]
    for spec in specs:  # a reranker's model is found (or missing) before any work
        if spec.reranker is not None:
            check_model("reranker", spec.reranker.name, spec.reranker.model)
    if isinstance(device, str) and device.strip().lower() == "auto" and engine is None:  # workers resolve their own
        from attnsift.config import resolve_device

        device = str(resolve_device("auto"))  # results are keyed by the device they ran on
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"the same system is listed twice: {labels}")
    if not datasets:
        raise ValueError("no data set given; e.g. --dataset scifact,nfcorpus,dl19")
    if isinstance(indexes, (str, Path)):
        indexes = [indexes]
    out = Path(out_dir)
    result = BenchResult(out, list(datasets), specs)
    cache: dict = {}
    rerankers: dict = {}
    t_start = time.perf_counter()
    # Every data set and index is read before any work: a bad name or an index of another corpus stops here.
    saved = [read_saved_index(p) for p in indexes]
    loaded = {name: load_dataset(name, split=split) for name in datasets}
    matched = match_indexes(saved, {n: ds.corpus.fingerprint() for n, ds in loaded.items()}) if saved else {}
    with bench_lock(out):
        for name in datasets:
            ds = loaded[name]
            if max_queries is not None:
                ds = ds.subset(max_queries=max_queries)
            fingerprints = ds.fingerprints()
            for spec in specs:
                index = index_for(spec, matched.get(name, ()))
                fields = key_fields(ds, fingerprints, spec, metrics, saved=index, device=device)
                r = _run_system(ds, spec, out / ds.name / spec.slug, fields, metrics, cache, rerankers, progress,
                                stop_after, device=device, index=index, engine=engine)
                result.results[(name, spec.label)] = r
                if on_result is not None:
                    on_result(r)
        result.metadata = _metadata(datasets, specs, max_queries, metrics, time.perf_counter() - t_start)
        if saved:
            result.metadata["indexes"] = {n: [str(s.path) for s in v] for n, v in matched.items() if v}
        if device is not None:
            result.metadata["device"] = device
        if engine is not None:
            result.metadata["engine"] = repr(engine)
        write_reports(result, metrics, plots=plots)
    return result


def _metadata(datasets, specs, max_queries, metrics, seconds) -> dict[str, Any]:
    from attnsift import __version__

    from importlib.metadata import PackageNotFoundError, version

    # Installed versions, not imported modules: a rerun that finds every result done imports none of
    # them, and must write the same results.json.
    versions = {"attnsift": __version__, "python": platform.python_version()}
    for name, dist in (("torch", "torch"), ("transformers", "transformers"), ("bm25s", "bm25s"),
                       ("ir_measures", "ir-measures"), ("faiss", "faiss-cpu")):
        try:
            versions[name] = version(dist)
        except PackageNotFoundError:
            pass
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "datasets": list(datasets), "systems": [s.to_dict() for s in specs], "max_queries": max_queries,
        "metrics": list(metrics), "versions": versions, "wall_seconds": round(seconds, 1),
    }


def _cell(r: SystemResult | None, metric: str) -> tuple[str, float | None]:
    if r is None or metric not in r.report.aggregate:
        return "-", None
    value = r.report.aggregate[metric]
    mark = ""
    if r.first_stage_report is not None:
        cmp = r.first_stage_report.compare(r.report)
        try:
            mc = cmp[metric]
            if mc.significant:
                mark = "†" if mc.diff > 0 else "‡"
        except KeyError:
            pass
    return f"{value:.4f}{mark}", value


def results_markdown(result: BenchResult, metrics: Sequence[str] = BENCH_METRICS, command: str | None = None) -> str:
    """Markdown tables: data sets as columns, systems as rows, one table per metric, with an average column."""
    meta = result.metadata
    lines = ["# Quality benchmark", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [f"Date: {meta.get('date')}; machine: {meta.get('machine')}; "
              f"queries per data set: {meta.get('max_queries') or 'all'} (first N in file order).", ""]
    for metric in metrics:
        lines += [f"## {metric}", "", "| system | " + " | ".join(result.datasets) + " | avg | s/query |",
                  "|---|" + "---|" * (len(result.datasets) + 2)]
        for spec in result.systems:
            cells, vals, secs = [], [], []
            for d in result.datasets:
                r = result.results.get((d, spec.label))
                text, v = _cell(r, metric)
                cells.append(text)
                if v is not None:
                    vals.append(v)
                if r is not None:
                    secs.append(r.seconds_per_query)
            avg = f"{sum(vals) / len(vals):.4f}" if len(vals) == len(result.datasets) else "-"
            spq = f"{sum(secs) / len(secs):.3f}" if secs else "-"
            lines.append(f"| {spec.label} | " + " | ".join(cells) + f" | {avg} | {spq} |")
        lines.append("")
    lines += ["† / ‡: significantly better / worse than the system's own first stage (paired t-test over the "
              "same queries, p < 0.05). s/query: mean wall-clock seconds per query (first-stage search + "
              "reranking; model loading and index building excluded), averaged over data sets.", ""]
    if any(d == "dl19" for d in result.datasets):
        lines += ["DL19: the `bm25` first stage is the provided BM25 top-100 run (the local corpus is only the "
                  "pool of the provided runs); binary measures count grade >= 2 as relevant.", ""]
    return "\n".join(lines)


def write_reports(result: BenchResult, metrics: Sequence[str] = BENCH_METRICS, plots: bool = True,
                  command: str | None = None) -> None:
    out = result.out_dir
    rows = []
    for (d, label), r in result.results.items():
        row = {"dataset": d, "system": label, "spec": r.spec.to_dict(), "num_queries": r.report.num_queries,
               "seconds_per_query": r.seconds_per_query, **r.report.aggregate}
        if r.folder is not None:
            row["folder"] = r.folder.relative_to(out).as_posix() if r.folder.is_relative_to(out) else str(r.folder)
        if r.first_stage_report is not None:
            cmp = r.first_stage_report.compare(r.report)
            row["vs_first_stage"] = cmp.to_dict()
        rows.append(row)
    atomic_write_json(out / "results.json", {"metadata": result.metadata, "results": rows})
    atomic_write_text(out / "results.md", results_markdown(result, metrics, command=command))
    if plots:
        try:
            plot_quality_vs_cost(result, out / "quality_vs_cost.png")
            plot_per_query_delta(result, out / "per_query_delta.png")
        except ImportError as exc:  # matplotlib is the `plots` extra
            log.warning("plots skipped: %s (pip install 'attnsift[plots]')", exc)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(plt: Any, fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write a figure under a temporary name, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_quality_vs_cost(result: BenchResult, path: Path, metric: str = "nDCG@10") -> Path:
    """One panel per data set: ``metric`` against seconds per query (log scale), one point per system."""
    plt = _plt()
    n = len(result.datasets)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, d in zip(axes[0], result.datasets):
        for i, spec in enumerate(result.systems):
            r = result.results.get((d, spec.label))
            if r is None:
                continue
            x = max(r.seconds_per_query, 1e-5)
            ax.scatter([x], [r.report.aggregate[metric]], color=colors[i % len(colors)], s=50, label=spec.label, zorder=3)
        ax.set_xscale("log")
        ax.set_title(d)
        ax.set_xlabel("seconds per query (log)")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(metric)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return _save_figure(plt, fig, path)


def plot_per_query_delta(result: BenchResult, path: Path, metric: str = "nDCG@10") -> Path:
    """Per data set, the sorted per-query ``metric`` difference of each reranked system against its first stage."""
    plt = _plt()
    reranked = [s for s in result.systems if s.reranker is not None]
    n = len(result.datasets)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, d in zip(axes[0], result.datasets):
        for i, spec in enumerate(reranked):
            r = result.results.get((d, spec.label))
            if r is None or r.first_stage_report is None:
                continue
            base, new = r.first_stage_report.per_query, r.report.per_query
            deltas = sorted((new[q].get(metric, 0.0) - base[q].get(metric, 0.0)) for q in new if q in base)
            ax.plot(range(len(deltas)), deltas, color=colors[(i + 1) % len(colors)], label=spec.label, lw=1.5)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(d)
        ax.set_xlabel("queries (sorted by difference)")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(f"Δ {metric} vs first stage")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return _save_figure(plt, fig, path)
