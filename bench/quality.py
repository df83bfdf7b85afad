"""Quality benchmarks over many data sets and systems: resumable, with tables, JSON and plots.

Layout of ``out_dir``::

    <dataset>/<system-slug>/config.json       what this folder computes (data set, spec, query ids)
    <dataset>/<system-slug>/progress.jsonl    one line per finished query (ranking + seconds), flushed as it goes
    <dataset>/<system-slug>/run.trec          the final run, written atomically once every query is done
    <dataset>/<system-slug>/metrics.json      per-query and aggregate metrics; its presence marks completion
    results.json, results.md, quality_vs_cost.png, per_query_delta.png

An interrupted run loses at most the query in flight: on a rerun, complete folders (``metrics.json``
with the same configuration) are skipped, and partial ones resume after their last whole line (a
truncated last line is discarded). A folder whose configuration differs is recomputed, never mixed.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from attnsift.bench.specs import SystemSpec
from attnsift.io import atomic_write_json, atomic_write_text
from attnsift.pipeline import Pipeline, first_stage
from attnsift.trec import write_run
from attnsift.types import Candidate, Ranking, Run

log = logging.getLogger(__name__)

BENCH_METRICS = ("nDCG@10", "MRR@10", "R@100")
FORMAT_VERSION = 2  # 2: the spec's top_k is called depth


class _Interrupted(Exception):
    """Raised by the test hook ``stop_after`` to simulate an interruption."""


def _first_stage(ds: Any, spec: SystemSpec, cache: dict, progress: bool = False) -> tuple[Run, float]:
    """The first-stage run of ``spec`` on ``ds`` and its search seconds per query, through the Pipeline.

    Cached per data set, first stage, ``first_stage_k`` and query set, so the systems that share a first
    stage share one retrieval (and ``bm25`` and ``bm25+icr`` rerank the very same candidates).
    """
    key = (ds.name, str(spec.first), spec.first_stage_k, tuple(ds.queries))
    if key not in cache:
        run = spec.first.model if spec.first.name == "run" else None
        stage = first_stage(ds, spec.first.name, run=run, model=None if run else spec.first.model,
                            options=dict(spec.first.options), progress=progress)
        pipe = Pipeline(stage, first_stage_k=spec.first_stage_k)
        results = list(pipe.stream(ds.queries))
        spq = sum(r.first_stage_seconds for r in results) / max(len(results), 1)
        cache[key] = (Run((r.ranking for r in results), name=pipe.name), spq)
    return cache[key]


def _config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _read_progress(path: Path) -> dict[str, dict]:
    """Whole lines of ``progress.jsonl``; a truncated or corrupt tail is cut off (the query is redone)."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    good_bytes = 0
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break
            try:
                rec = json.loads(raw)
                qid, docs, secs = rec["qid"], rec["docs"], float(rec["seconds"])
                if not isinstance(docs, list):
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                break
            done[qid] = {"docs": docs, "seconds": secs}
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        log.warning("%s: discarding a partial last line (an interrupted query is redone)", path)
        with open(path, "r+b") as fh:
            fh.truncate(good_bytes)
    return done


@dataclass
class SystemResult:
    dataset: str
    spec: SystemSpec
    report: Any  # EvalReport
    first_stage_report: Any | None
    seconds_per_query: float
    resumed_queries: int = 0
    skipped: bool = False


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


def _run_system(ds: Any, spec: SystemSpec, folder: Path, metrics: Sequence[str], cache: dict,
                rerankers: dict, progress: bool, stop_after: int | None) -> SystemResult:
    from attnsift.eval.metrics import evaluate
    from attnsift.eval.report import EvalReport
    from attnsift.registry import build_reranker

    queries = list(ds.queries.values())
    config = {"format": FORMAT_VERSION, "dataset": ds.name, "split": getattr(ds, "split", "test"),
              "system": spec.to_dict(), "queries": [q.id for q in queries], "metrics": list(metrics)}
    chash = _config_hash(config)
    folder.mkdir(parents=True, exist_ok=True)
    metrics_path, progress_path, config_path = folder / "metrics.json", folder / "progress.jsonl", folder / "config.json"

    first_run, first_spq = _first_stage(ds, spec, cache, progress=progress)
    q_ids = [q.id for q in queries]
    first_report = None
    if spec.reranker is not None:
        first_report = evaluate(first_run, ds.qrels, metrics=metrics, rel_level=ds.rel_level,
                                name=str(spec.first), queries=q_ids)

    if metrics_path.exists():
        try:
            saved = json.loads(metrics_path.read_text())
            if saved.get("config_hash") == chash:
                report = EvalReport.from_dict(saved["report"])
                return SystemResult(ds.name, spec, report, first_report, saved["seconds_per_query"], skipped=True)
        except (ValueError, KeyError):
            pass
        log.warning("%s: results from another configuration; recomputing", folder)
        metrics_path.unlink()

    if config_path.exists():
        try:
            same = json.loads(config_path.read_text()).get("config_hash") == chash
        except ValueError:
            same = False
        if not same and progress_path.exists():
            log.warning("%s: partial results from another configuration; starting over", folder)
            progress_path.unlink()
    atomic_write_json(config_path, {**config, "config_hash": chash})

    done = _read_progress(progress_path)
    resumed = len(done)
    todo = [q for q in queries if q.id not in done]
    if todo:
        reranker = None
        if spec.reranker is not None:
            key = str(spec.reranker)
            if key not in rerankers:
                rerankers[key] = _share_masses(build_reranker(spec.reranker.name, model=spec.reranker.model,
                                                              options=dict(spec.reranker.options)), rerankers)
            reranker = rerankers[key]
        # The cached first-stage run stands in for the first stage: the systems sharing it rerank the same
        # candidates, and its search seconds per query are added to each query's reranking seconds.
        pipe = Pipeline(first_run, reranker, first_stage_k=spec.first_stage_k, depth=spec.depth,
                        corpus=ds.corpus if reranker is not None else None)
        items: Iterable = pipe.stream(todo)
        if progress:
            from tqdm.auto import tqdm

            items = tqdm(items, total=len(todo), desc=f"{ds.name} {spec.label}", unit="q", leave=False)
        with open(progress_path, "a", encoding="utf-8") as fh:
            for n, res in enumerate(items):
                if stop_after is not None and n >= stop_after:
                    raise _Interrupted(f"stopped after {n} queries")
                # rerank_seconds is the scoring's compute, also when served from a pass shared with another
                # system (ICR's calibrations): the cost of the system run alone.
                secs = first_spq + res.rerank_seconds
                rec = {"qid": res.query.id, "docs": [[c.doc_id, c.score] for c in res.ranking.candidates],
                       "seconds": secs}
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
                done[res.query.id] = {"docs": rec["docs"], "seconds": secs}

    run = Run((Ranking(q, tuple(Candidate(d, s) for d, s in done[q.id]["docs"])) for q in queries), name=spec.label)
    write_run(run, folder / "run.trec", tag=spec.slug)
    report = evaluate(run, ds.qrels, metrics=metrics, rel_level=ds.rel_level, name=spec.label, queries=q_ids)
    spq = sum(done[q.id]["seconds"] for q in queries) / max(len(queries), 1)
    atomic_write_json(metrics_path, {"config_hash": chash, "seconds_per_query": spq, "report": report.to_dict()})
    return SystemResult(ds.name, spec, report, first_report, spq, resumed_queries=resumed)


def run_quality_bench(
    datasets: Sequence[str],
    systems: Sequence[str | SystemSpec],
    out_dir: str | Path,
    max_queries: int | None = None,
    metrics: Sequence[str] = BENCH_METRICS,
    progress: bool = True,
    plots: bool = True,
    stop_after: int | None = None,
    on_result: Callable[[SystemResult], None] | None = None,
) -> BenchResult:
    """Run every system on every data set, resumably; write tables, JSON and plots into ``out_dir``.

    Parameters
    ----------
    datasets : names for :func:`attnsift.eval.datasets.load_dataset`
    systems : spec strings (see :mod:`attnsift.bench.specs`) or parsed specs
    out_dir : folder for runs, metrics and reports (created)
    max_queries : only the first N queries of each data set (file order), the same for every system
    stop_after : testing hook, raise after this many newly computed queries (simulates an interruption)
    """
    from attnsift.eval.datasets import load_dataset
    from attnsift.types import check_k

    if max_queries is not None:
        check_k(max_queries, "max_queries")
    specs = [s if isinstance(s, SystemSpec) else SystemSpec.parse(s) for s in systems]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"the same system is listed twice: {labels}")
    if not datasets:
        raise ValueError("no data set given; e.g. --datasets scifact,nfcorpus,dl19")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = BenchResult(out, list(datasets), specs)
    cache: dict = {}
    rerankers: dict = {}
    t_start = time.perf_counter()
    for name in datasets:
        ds = load_dataset(name)
        if max_queries is not None:
            ds = ds.subset(max_queries=max_queries)
        for spec in specs:
            folder = out / ds.name / spec.slug
            r = _run_system(ds, spec, folder, metrics, cache, rerankers, progress, stop_after)
            result.results[(name, spec.label)] = r
            if on_result is not None:
                on_result(r)
    result.metadata = _metadata(datasets, specs, max_queries, metrics, time.perf_counter() - t_start)
    write_reports(result, metrics, plots=plots)
    return result


def _metadata(datasets, specs, max_queries, metrics, seconds) -> dict[str, Any]:
    import sys

    from attnsift import __version__

    versions = {"attnsift": __version__, "python": platform.python_version()}
    for mod in ("torch", "transformers", "bm25s", "ir_measures", "faiss"):
        m = sys.modules.get(mod)
        if m is not None:
            versions[mod] = getattr(m, "__version__", "?")
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
