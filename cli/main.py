"""The ``attnsift`` command line (typer): evaluation, reranking, explain, bench; first-stage commands are in
``cli/search.py``, the application and its global options in ``cli/app.py``.

Only typer is imported at module level: ``attnsift --help`` must not pay for torch or transformers.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

import attnsift.cli.search  # noqa: F401,E402  (registers datasets, index, retrieve on app)
import attnsift.cli.serve  # noqa: F401,E402  (registers serve on app)
from attnsift.cli.app import DEFAULT_METRICS, _metrics, _print_json, _print_table, _setup_logging, app
from attnsift.cli.common import (ENGINE_HELP, ENGINE_OPTION_HELP, RAY_ADDRESS_HELP, check_device, check_output,
                                 check_spec_options, fail, guard, make_engine, nonempty_corpus, nonempty_queries,
                                 run_file_bytes, warn, warn_unknown_judged)
from attnsift.types import Run

_fail, _guard = fail, guard
ENCODER_STAGES = ("dense", "late", "hybrid")  # first stages that run an encoder (as attnsift.bench.stages)


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
def _check_names(reranker: str, model: Optional[str], retriever: str, encoder: Optional[str]) -> None:
    """The reranker's model and the encoder, checked by name before any data set or index is loaded."""
    from attnsift.registry import check_model

    check_model("reranker", reranker, model)
    check_model("retriever", retriever, encoder)


def _first_stage_args(retriever: Optional[str], run: Optional[str], reranker: str, model: Optional[str],
                      encoder: Optional[str], retriever_options: dict, device: Optional[str], saved) -> tuple:
    """Settle which first stage runs, with which encoder, and who gets ``--model`` and ``--device``.

    Returns ``(retriever, model, encoder)``; raises ValueError for contradictory options.
    """
    from attnsift.errors import deprecated

    if saved is not None:
        if run is not None:
            raise ValueError("give --index or --run, not both: each is a first stage")
        if retriever is not None and retriever != saved.kind:
            raise ValueError(f"--retriever {retriever}, but the index at {saved.path} is a {saved.kind} index; "
                             "drop --retriever (an --index sets it)")
    retriever = saved.kind if saved is not None else (retriever or "bm25")
    if "encoder" in retriever_options:
        given = retriever_options.pop("encoder")
        if encoder is not None and encoder != given:
            raise ValueError(f"--encoder {encoder} and --retriever-option encoder={given} disagree; give --encoder once")
        encoder = given
    if model is not None and reranker == "none" and retriever in ENCODER_STAGES:
        # Until this release --model named the encoder too; with no reranker it still does, for one release.
        if encoder is not None:
            raise ValueError("--model is the reranker's model and --reranker is none; drop --model (--encoder "
                             "names the encoder)")
        deprecated("--model for the encoder of a dense, late or hybrid first stage", "--encoder")
        model, encoder = None, model
    if encoder is not None and retriever not in ENCODER_STAGES:
        raise ValueError(f"--encoder is for a dense, late or hybrid first stage; the first stage here is {retriever}, "
                         "which runs no encoder: drop --encoder or give --retriever dense")
    if device not in (None, "auto") and reranker == "none" and retriever not in ENCODER_STAGES:
        raise ValueError(f"--device: nothing here runs a model ({retriever}, --reranker none); drop --device")
    return retriever, model, encoder


def _rerank_impl(
    dataset: str,
    retriever: Optional[str],
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
    index_dir: Optional[Path] = None,
    encoder: Optional[str] = None,
    device: Optional[str] = None,
    force: bool = False,
    engine: Optional[str] = None,
    ray_address: Optional[str] = None,
    engine_option: Optional[List[str]] = None,
    dtype: Optional[str] = None,
) -> None:
    from attnsift.bench.stages import load_saved_index, read_saved_index
    from attnsift.config import parse_option_strings
    from attnsift.eval.datasets import load_dataset
    from attnsift.eval.metrics import evaluate as _evaluate
    from attnsift.pipeline import Pipeline, check_cuts, first_stage, provided_run, restrict_to_run
    from attnsift.registry import build_reranker
    from attnsift.types import check_k

    # Cheap checks first (cut-offs, metrics, options, device, index record, model names, output path),
    # then the data set and --run, then the model, then retrieval.
    check_cuts(first_stage_k, depth, k, reranked=reranker != "none")
    if max_queries is not None:
        check_k(max_queries, "--max-queries")
    names = _metrics(metrics)
    options, retriever_options = parse_option_strings(option), parse_option_strings(retriever_option)
    runner = make_engine(engine, ray_address, engine_option)
    if runner is not None and reranker == "none":
        raise ValueError("--engine ray runs the reranker on Ray workers; with --reranker none there is nothing to run "
                         "there: drop --engine or choose a reranker")
    device = check_device(device, local=runner is None or retriever in ENCODER_STAGES)
    if dtype is not None:
        if reranker == "none":
            raise ValueError("--dtype is the reranker model's precision and --reranker is none; drop --dtype")
        from attnsift.config import resolve_dtype

        resolve_dtype(dtype)  # a misspelt precision is an error before anything loads
    saved = read_saved_index(index_dir) if index_dir is not None else None
    retriever, model, encoder = _first_stage_args(retriever, run, reranker, model, encoder, retriever_options,
                                                  device, saved)
    _check_names(reranker, model, retriever, encoder)
    if save_run is not None:
        check_output(save_run, "--save-run")
    ds = nonempty_queries(load_dataset(dataset, split=split))
    if saved is not None:
        from attnsift.indexes.corpus import check_index_corpus

        check_index_corpus(saved.path, ds.corpus.fingerprint(), ds.name, force=force)
    provided = None if saved is not None else provided_run(ds, retriever, run)
    if provided is not None:
        # A provided run is evaluated on the queries it ranks; --max-queries selects among them.
        ds = restrict_to_run(ds, provided, max_queries=max_queries, strict=strict, warn=warn)
    else:
        if saved is None:
            nonempty_corpus(ds)
        if max_queries is not None:
            ds = ds.subset(max_queries=max_queries)
    if provided is not None and run is None:
        typer.echo(f"note: {ds.name} provides a {retriever!r} run; using it as the first stage", err=True)
    if save_run is not None:
        check_output(save_run, "--save-run", min_free_bytes=run_file_bytes(len(ds.queries), k or first_stage_k))
    warn_unknown_judged(ds)
    if runner is not None:
        from attnsift.engines.recipe import RerankerRecipe

        # The workers build the model from its recipe; the driver only checks it (it may have no GPU).
        rr = RerankerRecipe(reranker, model, options, device, dtype)
        rr.check()
        runner.start()
    else:
        rr = build_reranker(reranker, model=model, options=options, device=None if reranker == "none" else device,
                            dtype=dtype)
    if reranker == "none":
        rr = None
    stage_device = device if retriever in ENCODER_STAGES else None
    if saved is not None:
        stage = load_saved_index(saved, encoder=encoder, device=stage_device, options=retriever_options)
    else:
        stage = first_stage(ds, retriever, run=provided, encoder=encoder, options=retriever_options,
                            device=stage_device)
    pipe = Pipeline(stage, rr, first_stage_k=first_stage_k, depth=depth, k=k,
                    corpus=None if rr is None else ds.corpus)
    try:
        results = list(pipe.stream(ds.queries, engine=runner))
    finally:
        if runner is not None:
            runner.close()
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
               "truncation": getattr(runner if runner is not None else rr, "truncation", None),
               **({} if runner is None else {"engine": repr(runner)}),
               "run": str(save_run) if save_run else None, "index": str(saved.path) if saved else None}
        if comparison is not None:
            obj["first_stage"] = {"system": first.name, **reports[0].aggregate}
            obj["comparison"] = comparison.to_dict()
        _print_json(obj)
    else:
        what = "first stage only" if rr is None else f"{reranker} reranks the top {pipe.depth} of {pipe.first_stage_k}"
        if pipe.k is not None:
            what += f", cut to {pipe.k}"
        _print_table(reports, title=f"{ds.name}: {report.num_queries} queries; {what}\n"
                                    f"{timing['seconds_per_query']} s/query")


_RERANK_HELP = "Run a first stage (or take a provided run), optionally rerank, evaluate, print the metrics table."
_DEVICE_HELP = "Where the models run: auto, cpu, cuda, cuda:1 (default auto: CUDA when available, else the CPU)."


@app.command(help=_RERANK_HELP)
@_guard
def rerank(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Data set name, alias, ir_datasets id or BEIR folder."),
    retriever: Optional[str] = typer.Option(None, "--retriever", help="First stage: bm25 | dense | late | hybrid (default bm25; a provided run of the same name stands in: dl19 bm25)."),
    index_dir: Optional[Path] = typer.Option(None, "--index", metavar="DIR", help="A saved index (`attnsift index`) as the first stage; its kind sets --retriever."),
    run: Optional[str] = typer.Option(None, "--run", help="Use a provided run instead of a first stage: a TREC file or a run name of the data set (dl19: bm25, splade)."),
    reranker: str = typer.Option("none", "--reranker", help="none | icr | listwise | blockrank | cross-encoder"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="The reranker's model (default smollm2-135m; cross-encoder: required, a folder or cached hub id)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Encoder of a dense, late or hybrid first stage (default minilm; an --index: its own)."),
    device: Optional[str] = typer.Option(None, "--device", help=_DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="The reranker model's precision: float32 | bfloat16 | float16 (default: float32 on the CPU, bfloat16 on CUDA; bfloat16 is faster on CPUs with AVX512-BF16)."),
    first_stage_k: int = typer.Option(100, "--first-stage-k", help="How many candidates the first stage returns per query."),
    depth: Optional[int] = typer.Option(None, "--depth", help="How many first-stage candidates the reranker rescores (default: --first-stage-k)."),
    k: Optional[int] = typer.Option(None, "--k", "-k", help="How many candidates per query the final run keeps (default: all)."),
    max_queries: Optional[int] = typer.Option(None, "--max-queries", help="Only the first N queries (in file order; with --run, the first N that the run ranks)."),
    strict: bool = typer.Option(False, "--strict", help="A --run that misses some of the data set's queries is an error (default: a warning, and the covered queries are evaluated)."),
    force: bool = typer.Option(False, "--force", help="Use an --index built on another corpus than --dataset's (warns)."),
    save_run: Optional[Path] = typer.Option(None, "--save-run", help="Write the final run (TREC format, atomically)."),
    metrics: str = typer.Option(DEFAULT_METRICS, "--metrics", help="Comma-separated metric names."),
    option: Optional[List[str]] = typer.Option(None, "--option", metavar="KEY=VALUE", help="Reranker option (repeatable), e.g. calibration=none."),
    retriever_option: Optional[List[str]] = typer.Option(None, "--retriever-option", metavar="KEY=VALUE", help="First-stage option (repeatable), e.g. k1=1.2."),
    split: str = typer.Option("test", "--split", help="Qrels split."),
    compare_first_stage: bool = typer.Option(True, "--compare-first-stage/--no-compare-first-stage", help="Also print the first stage's row and a paired t-test."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout (metric names as keys, plus timing); progress stays on stderr."),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="HOST:PORT", help=RAY_ADDRESS_HELP),
    engine_option: Optional[List[str]] = typer.Option(None, "--engine-option", metavar="KEY=VALUE", help=ENGINE_OPTION_HELP),
) -> None:
    _rerank_impl(dataset, retriever, run, reranker, model, first_stage_k, depth, k, max_queries, save_run, metrics,
                 option, retriever_option, split, compare_first_stage, as_json, strict, index_dir=index_dir,
                 encoder=encoder, device=device, force=force, engine=engine, ray_address=ray_address,
                 engine_option=engine_option, dtype=dtype)


@app.command()
@_guard
def explain(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Data set name, alias or BEIR folder."),
    query_id: Optional[str] = typer.Option(None, "--query-id", help="The query to explain (its id in the data set)."),
    query_id_short: Optional[str] = typer.Option(None, "-q", hidden=True, help="Deprecated: --query-id."),
    reranker: str = typer.Option("icr", "--reranker", help="Attention reranker: icr."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="The reranker's model (default smollm2-135m)."),
    retriever: str = typer.Option("bm25", "--retriever", help="First stage (a provided run of the same name is used when the data set has one)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Encoder of a dense, late or hybrid first stage (default minilm)."),
    device: Optional[str] = typer.Option(None, "--device", help=_DEVICE_HELP),
    depth: int = typer.Option(10, "--depth", help="How many first-stage candidates to rerank and show."),
    option: Optional[List[str]] = typer.Option(None, "--option", metavar="KEY=VALUE", help="Reranker option (repeatable)."),
    out: Path = typer.Option(Path("explain-out"), "--out", "-o", help="Folder for the HTML page and the PNG."),
    split: str = typer.Option("test", "--split", help="Qrels split."),
) -> None:
    """Show which tokens of each candidate drew the query's attention, beside the rank change (HTML + PNG)."""
    from attnsift.analysis.explain import explain_icr, write_explanation
    from attnsift.config import parse_option_strings
    from attnsift.errors import deprecated
    from attnsift.eval.datasets import load_dataset
    from attnsift.pipeline import Pipeline, check_cuts, first_stage, provided_run
    from attnsift.registry import build_reranker

    if query_id_short is not None:
        deprecated("explain -q (the query id)", "--query-id (-q is query text in retrieve and search)")
        if query_id is not None and query_id != query_id_short:
            raise ValueError(f"--query-id {query_id} and -q {query_id_short} disagree; give --query-id once")
        query_id = query_id_short
    if query_id is None:
        raise ValueError("give --query-id ID: the id of a judged query of the data set")
    check_cuts(depth=depth)
    if reranker != "icr":
        raise ValueError(f"explain supports --reranker icr (per-token attention); got {reranker!r}")
    if encoder is not None and retriever not in ENCODER_STAGES:
        raise ValueError(f"--encoder is for a dense, late or hybrid first stage, not {retriever}; drop --encoder")
    device = check_device(device)
    _check_names(reranker, model, retriever, encoder)
    check_output(out, "--out", folder=True)
    options = parse_option_strings(option)
    ds = load_dataset(dataset, split=split)
    if query_id not in ds.queries:
        some = ", ".join(list(ds.queries)[:5])
        raise ValueError(f"query {query_id!r} is not a judged query of {ds.name} ({split}); e.g. {some}")
    sub = ds.subset([query_id])
    provided = provided_run(sub, retriever)
    rr = build_reranker(reranker, model=model, options=options, device=device)
    # The explanation scores the candidates itself (per-token masses): the pipeline gives the first stage's
    # top `depth` with their texts.
    stage = first_stage(sub, retriever, run=provided, encoder=encoder,
                        device=device if retriever in ENCODER_STAGES and provided is None else None)
    first = Pipeline(stage, k=depth, corpus=sub.corpus)(sub.queries[query_id])
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


def _names(values: Optional[List[str]]) -> list[str]:
    """Comma-separated and/or repeated values, in order, each once."""
    out: list[str] = []
    for value in values or []:
        out += [v.strip() for v in value.split(",") if v.strip() and v.strip() not in out]
    return out


def bench_command(datasets: list[str], systems: str, out: Path, max_queries: Optional[int], metrics: str,
                  plots: bool, indexes: list[Path], device: Optional[str], split: str,
                  engine: Optional[List[str]] = None) -> str:
    """The command line that reproduces a bench, as ``results.md`` records it: the current spellings of
    the options, each argument quoted for a POSIX shell (``shlex.join``), so it can be pasted as it is."""
    args = ["attnsift", "bench", "quality", "--dataset", ",".join(datasets), "--systems", systems, "--out", str(out)]
    if max_queries is not None:
        args += ["--max-queries", str(max_queries)]
    args += ["--metrics", metrics]
    for path in indexes:
        args += ["--index", str(path)]
    if device is not None:
        args += ["--device", device]
    if split != "test":
        args += ["--split", split]
    if not plots:
        args.append("--no-plots")
    return shlex.join(args + list(engine or []))


@bench_app.command("quality")
@_guard
def bench_quality(
    dataset: Optional[List[str]] = typer.Option(None, "--dataset", "-d", metavar="NAME[,NAME]", help="Data sets, comma-separated or repeated, e.g. scifact,nfcorpus,dl19."),
    datasets_old: Optional[str] = typer.Option(None, "--datasets", hidden=True, help="Deprecated: --dataset."),
    systems: str = typer.Option(..., "--systems", help="Comma-separated system specs, e.g. bm25,bm25+icr:smollm2-135m[calibration=none]."),
    index: Optional[List[Path]] = typer.Option(None, "--index", metavar="DIR", help="A saved index (repeatable): stands in for the first stage of its kind on the data set whose corpus it was built on."),
    device: Optional[str] = typer.Option(None, "--device", help=_DEVICE_HELP),
    out: Path = typer.Option(Path("bench-out"), "--out", "-o", help="Output folder (runs, metrics, results.md/json, plots)."),
    max_queries: Optional[int] = typer.Option(None, "--max-queries", help="Only the first N queries of each data set."),
    metrics: str = typer.Option("nDCG@10,MRR@10,R@100", "--metrics", help="Comma-separated metric names."),
    split: str = typer.Option("test", "--split", help="Qrels split of every data set."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Draw quality-vs-cost and per-query-difference PNGs."),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="HOST:PORT", help=RAY_ADDRESS_HELP),
    engine_option: Optional[List[str]] = typer.Option(None, "--engine-option", metavar="KEY=VALUE", help=ENGINE_OPTION_HELP),
) -> None:
    """Run every system on every data set; a rerun skips what is complete and resumes what is partial."""
    from attnsift.bench.quality import run_quality_bench, write_reports
    from attnsift.bench.specs import SystemSpec, split_specs
    from attnsift.errors import deprecated
    from attnsift.types import check_k

    if datasets_old is not None:
        deprecated("bench quality --datasets", "--dataset (comma-separated or repeated)")
    names = _names([*(dataset or []), *([datasets_old] if datasets_old is not None else [])])
    if not names:
        raise ValueError("give --dataset: one or more data sets, e.g. --dataset scifact,nfcorpus")
    if max_queries is not None:
        check_k(max_queries, "--max-queries")
    metric_names = _metrics(metrics)
    # Every spec is parsed before any work, so a bad one is found before the first stage of the first runs.
    specs = [SystemSpec.parse(s) for s in split_specs(systems)]
    for spec in specs:
        check_spec_options(spec)
    if not specs:
        raise ValueError("--systems is empty; give a comma-separated list such as bm25,bm25+icr:smollm2-135m")
    runner = make_engine(engine, ray_address, engine_option)
    device = check_device(device, local=runner is None)
    check_output(out, "--out", folder=True)
    # The command recorded in results.md names the engine (the results are the same on either).
    on = [] if runner is None else ["--engine", "ray", *(["--ray-address", ray_address] if ray_address else []),
                                    *[a for o in engine_option or [] for a in ("--engine-option", o)]]
    cmd = bench_command(names, systems, out, max_queries, metrics, plots, list(index or []), device, split, on)
    try:
        result = run_quality_bench(names, specs, out, max_queries=max_queries, metrics=metric_names, plots=plots,
                                   indexes=list(index or []), device=device, split=split, engine=runner)
    finally:
        if runner is not None:
            runner.close()
    write_reports(result, metric_names, plots=plots, command=cmd)
    typer.echo((out / "results.md").read_text())


def main() -> None:
    """Console script ``attnsift``."""
    app()


def rerank_main(argv: Optional[List[str]] = None) -> None:
    """Console script ``rerank``: the same as ``attnsift rerank``, with the global ``--quiet`` anywhere on
    the line."""
    from attnsift.cli.app import GLOBAL_FLAGS, setup_progress

    args = list(sys.argv[1:] if argv is None else argv)
    cut = args.index("--") if "--" in args else len(args)
    quiet = "--quiet" in args[:cut]
    args = [a for a in args[:cut] if a not in GLOBAL_FLAGS] + args[cut:]
    rerank_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    rerank_app.command(help=_RERANK_HELP, epilog="--quiet: no progress lines on stderr.")(rerank)
    _setup_logging(False)
    setup_progress(quiet)
    rerank_app(args=args, prog_name="rerank")


if __name__ == "__main__":  # pragma: no cover
    main()
