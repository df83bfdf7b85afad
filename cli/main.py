"""The ``attnsift`` command line (typer): evaluation, reranking, explain, bench; first-stage commands are in
``cli/search.py``, the application and its global options in ``cli/app.py``.

Only typer is imported at module level: ``attnsift --help`` must not pay for torch or transformers.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

import attnsift.cli.search  # noqa: F401,E402  (registers datasets, index, retrieve on app)
from attnsift.cli.app import DEFAULT_METRICS, _metrics, _print_json, _print_table, _setup_logging, app
from attnsift.cli.common import (check_output, check_spec_options, fail, guard, nonempty_corpus, nonempty_queries,
                                 run_file_bytes, warn, warn_unknown_judged)
from attnsift.types import Run

_fail, _guard = fail, guard


# --------------------------------------------------------------------------------------------- evaluate
@app.command()
@_guard
def evaluate(
    run_file: Path = typer.Option(..., "--run", help="A TREC run file."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="The data set whose qrels judge the run."),
    metrics: str = typer.Option(DEFAULT_METRICS, help="Comma-separated: nDCG@k, MRR@k, R@k, P@k, AP."),
    split: str = typer.Option("test", help="Qrels split."),
    baseline: Optional[Path] = typer.Option(None, help="Second run to compare with (difference and paired t-test)."),
    max_queries: Optional[int] = typer.Option(None, help="Only the first N queries of the data set that the run ranks."),
    strict: bool = typer.Option(False, "--strict", help="A run that misses some of the data set's queries is an error (default: a warning, and the covered queries are evaluated)."),
    per_query: bool = typer.Option(False, help="Include per-query values in --json output."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Evaluate a TREC run file against a data set's qrels (on the queries the run ranks)."""
    from attnsift.eval.datasets import load_dataset
    from attnsift.eval.metrics import evaluate as _evaluate
    from attnsift.pipeline import restrict_to_run
    from attnsift.trec import read_run
    from attnsift.types import check_k

    if max_queries is not None:
        check_k(max_queries, "--max-queries")
    names = _metrics(metrics)
    for path in (run_file, baseline):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"run file {path} does not exist; write one with `attnsift retrieve --save-run` or `attnsift rerank --save-run`")
    ds = nonempty_queries(load_dataset(dataset, split=split))
    warn_unknown_judged(ds)

    def judge(path: Path):
        run = read_run(path, name=path.stem)
        sub = restrict_to_run(ds, run, max_queries=max_queries, strict=strict, warn=warn)
        return _evaluate(run, sub.qrels, metrics=names, rel_level=ds.rel_level, name=path.name, queries=list(sub.queries))

    report = judge(run_file)
    reports = [report]
    comparison = None
    if baseline is not None:
        base = judge(baseline)
        reports = [base, report]
        comparison = base.compare(report)
    if as_json:
        obj = {"dataset": ds.name, "run": str(run_file), "num_queries": report.num_queries, **report.aggregate}
        if per_query:
            obj["per_query"] = report.per_query
        if comparison is not None:
            obj["comparison"] = comparison.to_dict()
        _print_json(obj)
    else:
        _print_table(reports)


# --------------------------------------------------------------------------------------------- rerank
def _rerank_impl(
    dataset: str,
    retriever: str,
    run: Optional[str],
    reranker: str,
    model: Optional[str],
    first_stage_k: int,
    depth: Optional[int],
    k: Optional[int],
    max_queries: Optional[int],
    save_run: Optional[Path],
    metrics: str,
    option: Optional[List[str]],
    retriever_option: Optional[List[str]],
    split: str,
    compare_first_stage: bool,
    as_json: bool,
    strict: bool = False,
) -> None:
    from attnsift.config import parse_option_strings
    from attnsift.eval.datasets import load_dataset
    from attnsift.eval.metrics import evaluate as _evaluate
    from attnsift.pipeline import Pipeline, check_cuts, first_stage, provided_run, restrict_to_run
    from attnsift.registry import build_reranker
    from attnsift.types import check_k

    # Cheap checks first (cut-offs, metrics, options, output path, data set, --run), then the model,
    # then retrieval.
    check_cuts(first_stage_k, depth, k, reranked=reranker != "none")
    if max_queries is not None:
        check_k(max_queries, "--max-queries")
    names = _metrics(metrics)
    options, retriever_options = parse_option_strings(option), parse_option_strings(retriever_option)
    if save_run is not None:
        check_output(save_run, "--save-run")
    ds = nonempty_queries(load_dataset(dataset, split=split))
    provided = provided_run(ds, retriever, run)
    if provided is not None:
        # A provided run is evaluated on the queries it ranks; --max-queries selects among those.
        ds = restrict_to_run(ds, provided, max_queries=max_queries, strict=strict, warn=warn)
    else:
        nonempty_corpus(ds)
        if max_queries is not None:
            ds = ds.subset(max_queries=max_queries)
    if provided is not None and run is None:
        typer.echo(f"note: {ds.name} provides a {retriever!r} run; using it as the first stage", err=True)
    if save_run is not None:
        check_output(save_run, "--save-run", min_free_bytes=run_file_bytes(len(ds.queries), k or first_stage_k))
    warn_unknown_judged(ds)
    rr = build_reranker(reranker, model=model, options=options)
    if reranker == "none":
        rr = None
    # --model names the reranker's model, and the encoder of a first stage that takes one.
    encoder = model if provided is None and retriever in ("dense", "late", "hybrid") else None
    stage = first_stage(ds, retriever, run=provided, model=encoder, options=retriever_options, progress=not as_json)
    pipe = Pipeline(stage, rr, first_stage_k=first_stage_k, depth=depth, k=k, corpus=None if rr is None else ds.corpus)
    results = list(pipe.stream(ds.queries, progress=not as_json))
    final = Run((r.ranking for r in results), name=pipe.name)
    first = Run((r.first_stage for r in results), name=pipe.first_stage_name)
    first_s = sum(r.first_stage_seconds for r in results)
    rerank_s = sum(r.rerank_seconds for r in results)
    if save_run is not None:
        from attnsift.trec import write_run

        write_run(final, save_run)
    q_ids = list(ds.queries)
    report = _evaluate(final, ds.qrels, metrics=names, rel_level=ds.rel_level, name=pipe.name, queries=q_ids)
    n = max(len(q_ids), 1)
    timing = {"first_stage_s": round(first_s, 3), "rerank_s": round(rerank_s, 3),
              "seconds_per_query": round((first_s + rerank_s) / n, 4),
              "rerank_seconds_per_query": round(rerank_s / n, 4)}
    reports = [report]
    comparison = None
    if rr is not None and compare_first_stage:
        base = _evaluate(first, ds.qrels, metrics=names, rel_level=ds.rel_level, name=first.name, queries=q_ids)
        reports = [base, report]
        comparison = base.compare(report)
    if as_json:
        obj = {"dataset": ds.name, "system": pipe.name, "num_queries": report.num_queries, **report.aggregate,
               "first_stage_k": pipe.first_stage_k, "depth": pipe.depth, "k": pipe.k, "timing": timing,
               "run": str(save_run) if save_run else None}
        if comparison is not None:
            obj["first_stage"] = {"system": first.name, **reports[0].aggregate}
            obj["comparison"] = comparison.to_dict()
        _print_json(obj)
    else:
        what = "first stage only" if rr is None else f"{reranker} reranks the top {pipe.depth} of {pipe.first_stage_k}"
        if pipe.k is not None:
            what += f", cut to {pipe.k}"
        title = (f"{ds.name}: {report.num_queries} queries, {what}; "
                 f"{timing['seconds_per_query']} s/query")
        _print_table(reports, title=title)


_RERANK_HELP = "Run a first stage (or take a provided run), optionally rerank, evaluate, print the metrics table."


@app.command(help=_RERANK_HELP)
@_guard
def rerank(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Data set name, alias, ir_datasets id or BEIR folder."),
    retriever: str = typer.Option("bm25", help="First stage: bm25 | dense | late | hybrid (a provided run of the same name stands in: dl19 bm25)."),
    run: Optional[str] = typer.Option(None, "--run", help="Use a provided run instead of a first stage: a TREC file or a run name of the data set (dl19: bm25, splade)."),
    reranker: str = typer.Option("none", help="none | icr | listwise | blockrank"),
    model: Optional[str] = typer.Option(None, help="Model for the reranker (default smollm2-135m), or the encoder of a dense first stage."),
    first_stage_k: int = typer.Option(100, "--first-stage-k", help="How many candidates the first stage returns per query."),
    depth: Optional[int] = typer.Option(None, "--depth", help="How many first-stage candidates the reranker rescores (default: --first-stage-k)."),
    k: Optional[int] = typer.Option(None, "--k", "-k", help="How many candidates per query the final run keeps (default: all)."),
    max_queries: Optional[int] = typer.Option(None, help="Only the first N queries (in file order; with --run, the first N that the run ranks)."),
    strict: bool = typer.Option(False, "--strict", help="A --run that misses some of the data set's queries is an error (default: a warning, and the covered queries are evaluated)."),
    save_run: Optional[Path] = typer.Option(None, help="Write the final run (TREC format, atomically)."),
    metrics: str = typer.Option(DEFAULT_METRICS, help="Comma-separated metric names."),
    option: Optional[List[str]] = typer.Option(None, "--option", help="Reranker option key=value (repeatable), e.g. calibration=none."),
    retriever_option: Optional[List[str]] = typer.Option(None, "--retriever-option", help="First-stage option key=value (repeatable), e.g. k1=1.2."),
    split: str = typer.Option("test", help="Qrels split."),
    compare_first_stage: bool = typer.Option(True, help="Also print the first stage's row and a paired t-test."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout (metric names as keys, plus timing)."),
) -> None:
    _rerank_impl(dataset, retriever, run, reranker, model, first_stage_k, depth, k, max_queries, save_run, metrics,
                 option, retriever_option, split, compare_first_stage, as_json, strict)


@app.command()
@_guard
def explain(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Data set name, alias or BEIR folder."),
    query_id: str = typer.Option(..., "--query-id", "-q", help="The query to explain."),
    reranker: str = typer.Option("icr", help="Attention reranker: icr."),
    model: Optional[str] = typer.Option(None, help="Model (default smollm2-135m)."),
    retriever: str = typer.Option("bm25", help="First stage (a provided run of the same name is used when the data set has one)."),
    depth: int = typer.Option(10, "--depth", help="How many first-stage candidates to rerank and show."),
    option: Optional[List[str]] = typer.Option(None, "--option", help="Reranker option key=value (repeatable)."),
    out: Path = typer.Option(Path("explain-out"), "--out", "-o", help="Folder for the HTML page and the PNG."),
    split: str = typer.Option("test", help="Qrels split."),
) -> None:
    """Show which tokens of each candidate drew the query's attention, beside the rank change (HTML + PNG)."""
    from attnsift.analysis.explain import explain_icr, write_explanation
    from attnsift.config import parse_option_strings
    from attnsift.eval.datasets import load_dataset
    from attnsift.pipeline import Pipeline, check_cuts, first_stage, provided_run
    from attnsift.registry import build_reranker

    check_cuts(depth=depth)
    if reranker != "icr":
        raise ValueError(f"explain supports --reranker icr (per-token attention); got {reranker!r}")
    check_output(out, "--out", folder=True)
    options = parse_option_strings(option)
    ds = load_dataset(dataset, split=split)
    if query_id not in ds.queries:
        some = ", ".join(list(ds.queries)[:5])
        raise ValueError(f"query {query_id!r} is not a judged query of {ds.name} ({split}); e.g. {some}")
    sub = ds.subset([query_id])
    provided = provided_run(sub, retriever)
    rr = build_reranker(reranker, model=model, options=options)
    # The explanation scores the candidates itself (per-token masses): the pipeline gives the first stage's
    # top `depth` with their texts.
    first = Pipeline(first_stage(sub, retriever, run=provided), k=depth, corpus=sub.corpus)(sub.queries[query_id])
    ex = explain_icr(sub, query_id, first, rr, depth=depth)
    html_path, png_path = write_explanation(ex, out)
    typer.echo(json.dumps({"html": str(html_path), "png": str(png_path), "metrics": ex.metrics}, allow_nan=False))


bench_app = typer.Typer(help="Benchmarks: quality over data sets x systems (resumable), with tables and plots.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")

from attnsift.cli.train import train_app  # noqa: E402  (typer only; the trainer loads torch when run)

app.add_typer(train_app, name="train")

from attnsift.cli.analyze import analyze_app  # noqa: E402  (typer only)

app.add_typer(analyze_app, name="analyze")


@bench_app.command("quality")
@_guard
def bench_quality(
    datasets_: str = typer.Option(..., "--datasets", help="Comma-separated data sets, e.g. scifact,nfcorpus,dl19."),
    systems: str = typer.Option(..., "--systems", help="Comma-separated system specs, e.g. bm25,bm25+icr:smollm2-135m[calibration=none]."),
    out: Path = typer.Option(Path("bench-out"), "--out", "-o", help="Output folder (runs, metrics, results.md/json, plots)."),
    max_queries: Optional[int] = typer.Option(None, help="Only the first N queries of each data set."),
    metrics: str = typer.Option("nDCG@10,MRR@10,R@100", help="Comma-separated metric names."),
    plots: bool = typer.Option(True, help="Draw quality-vs-cost and per-query-difference PNGs."),
) -> None:
    """Run every system on every data set; a rerun skips what is complete and resumes what is partial."""
    from attnsift.bench.quality import run_quality_bench, write_reports
    from attnsift.bench.specs import SystemSpec, split_specs
    from attnsift.types import check_k

    names = [d.strip() for d in datasets_.split(",") if d.strip()]
    if not names:
        raise ValueError("--datasets is empty; give a comma-separated list such as scifact,nfcorpus")
    if max_queries is not None:
        check_k(max_queries, "--max-queries")
    # Every spec is parsed before any work, so a bad one is found before the first stage of the first runs.
    specs = [SystemSpec.parse(s) for s in split_specs(systems)]
    for spec in specs:
        check_spec_options(spec)
    if not specs:
        raise ValueError("--systems is empty; give a comma-separated list such as bm25,bm25+icr:smollm2-135m")
    check_output(out, "--out", folder=True)
    cmd = " ".join(["attnsift", *sys.argv[1:]])
    result = run_quality_bench(names, specs, out, max_queries=max_queries, metrics=_metrics(metrics),
                               progress=True, plots=plots)
    write_reports(result, _metrics(metrics), plots=plots, command=cmd)
    typer.echo((out / "results.md").read_text())


def main() -> None:
    """Console script ``attnsift``."""
    app()


def rerank_main() -> None:
    """Console script ``rerank``: the same as ``attnsift rerank``."""
    rerank_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    rerank_app.command(help=_RERANK_HELP)(rerank)
    _setup_logging(False)
    rerank_app()


if __name__ == "__main__":  # pragma: no cover
    main()
