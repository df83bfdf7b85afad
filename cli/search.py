"""First-stage commands: ``attnsift datasets``, ``index``, ``search`` and ``retrieve``."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer

from attnsift.cli.app import _print_json, app
from attnsift.cli.common import (ENGINE_OPTION_HELP, RAY_ADDRESS_HELP, check_device, check_output, guard, make_engine,
                                 nonempty_corpus, nonempty_queries, run_file_bytes)
from attnsift.types import Run

_guard = guard


# --------------------------------------------------------------------------------------------- datasets
@app.command()
@_guard
def datasets(
    data_dir: Optional[Path] = typer.Option(None, help="Folder of BEIR-layout data sets (default: the data folder, see --path)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    path: bool = typer.Option(False, "--path", help="Print the data folder and where it comes from, then stop."),
) -> None:
    """List the data sets attnsift knows: local folders and ir_datasets aliases."""
    if path:
        from attnsift.eval.datasets import data_folder_info

        info = data_folder_info()
        if data_dir is not None:
            info = {"path": str(data_dir), "source": "--data-dir", "exists": data_dir.is_dir()}
        if as_json:
            _print_json(info)
            return
        origin = {"ATTNSIFT_DATA": "from $ATTNSIFT_DATA", "install": "recorded by make install in this venv",
                  "default": "the default; set $ATTNSIFT_DATA to use another"}.get(info["source"], f"from {info['source']}")
        typer.echo(f"{info['path']}  ({origin}{'' if info['exists'] else '; it does not exist yet'})")
        return
    from attnsift.eval.datasets import list_datasets

    rows = list_datasets(data_dir)
    if as_json:
        _print_json({"datasets": rows})
        return
    from rich.console import Console
    from rich.table import Table

    # The title is a plain line and long cells fold, so the table keeps its shape in an 80-column terminal.
    typer.echo("attnsift data sets")
    table = Table()
    for col in ("name", "available", "docs", "queries"):
        table.add_column(col, no_wrap=True)
    table.add_column("from", overflow="fold")
    for r in rows:
        where = r.get("path") or str(r.get("source", "")).split(":", 1)[-1] or "-"
        table.add_row(
            str(r.get("name")),
            "yes" if r.get("available") else "no",
            str(r.get("docs") if r.get("docs") is not None else "-"),
            str(r.get("queries") if r.get("queries") is not None else "-"),
            ("" if r.get("path") else "ir_datasets: ") + where,
        )
    Console().print(table)


# --------------------------------------------------------------------------------------------- index
_ENCODER_HELP = "Encoder of dense / late / hybrid (default minilm): a short name, a folder or a hub id."


def _encoder(encoder: Optional[str], model: Optional[str]) -> Optional[str]:
    """--encoder, or the deprecated --model spelling (warns)."""
    if model is None:
        return encoder
    from attnsift.errors import deprecated

    deprecated("--model (for a first stage's encoder)", "--encoder")
    if encoder is not None and encoder != model:
        raise ValueError(f"--encoder {encoder} and --model {model} disagree; give --encoder only")
    return model


def _dataset_or_input(dataset: Optional[str], input_path: Optional[Path]):
    """``(documents path, None)`` or ``(None, data set)`` for ``index``; the path is checked, not read.
    A folder holding only a ``corpus.jsonl`` (no queries or qrels) is read as documents."""
    from attnsift.documents import check_documents_path

    if (dataset is None) == (input_path is None):
        raise ValueError("give --input (your documents: docs.jsonl, docs.tsv, a folder of .txt files) or "
                         "--dataset (a data set name), one of them")
    if input_path is not None:
        check_documents_path(input_path)
        return input_path, None
    from attnsift.errors import DatasetError
    from attnsift.eval.datasets import load_dataset

    try:
        return None, nonempty_corpus(load_dataset(dataset))
    except DatasetError:
        folder = Path(dataset)
        if folder.is_dir() and (folder / "corpus.jsonl").is_file():  # a corpus without queries or qrels
            return folder, None
        raise


def _retriever_options(retriever_option: Optional[List[str]], option: Optional[List[str]]) -> list[str]:
    """``--retriever-option`` values; the old ``--option`` spelling of index/retrieve still works (deprecated:
    in rerank and search ``--option`` is the reranker's)."""
    if option:
        from attnsift.errors import deprecated

        deprecated("--option for first-stage options (index, retrieve)", "--retriever-option")
    return [*(retriever_option or []), *(option or [])]


@app.command()
@_guard
def index(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the index to (written atomically)."),
    input_path: Optional[Path] = typer.Option(None, "--input", "-i", help="Your documents: docs.jsonl, docs.tsv, a folder of .txt/.md files or a BEIR folder."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Data set name, alias or BEIR folder."),
    retriever: str = typer.Option("bm25", help="bm25 | dense | hybrid | late"),
    encoder: Optional[str] = typer.Option(None, "--encoder", help=_ENCODER_HELP),
    model: Optional[str] = typer.Option(None, "--model", hidden=True, help="Deprecated: --encoder."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N for the encoder (default auto: CUDA when available)."),
    retriever_option: Optional[List[str]] = typer.Option(None, "--retriever-option", metavar="KEY=VALUE",
                                                         help="First-stage option (repeatable), e.g. k1=0.9."),
    option: Optional[List[str]] = typer.Option(None, "--option", hidden=True, help="Deprecated: --retriever-option."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index at --out."),
    engine: str = typer.Option("local", "--engine", help="Where a dense index's documents are encoded: local or ray (Ray workers, one encoder each)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="HOST:PORT", help=RAY_ADDRESS_HELP),
    engine_option: Optional[List[str]] = typer.Option(None, "--engine-option", metavar="KEY=VALUE", help=ENGINE_OPTION_HELP),
) -> None:
    """Build a first-stage index over your documents (--input) or a data set's corpus and save it."""
    from attnsift import progress
    from attnsift.config import parse_option_strings
    from attnsift.registry import build_index, check_model, check_options, index_info

    encoder = _encoder(encoder, model)
    options = parse_option_strings(_retriever_options(retriever_option, option))
    check_options("retriever", retriever, options)
    check_model("retriever", retriever, encoder or options.get("encoder"))
    runner = make_engine(engine, ray_address, engine_option)
    if runner is not None and retriever != "dense":
        raise ValueError(f"--engine ray encodes the documents of a dense index; a {retriever} index is built here: "
                         "drop --engine or give --retriever dense")
    device = check_device(device)
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists; pass --overwrite to replace it, or choose another --out")
    check_output(out, "--out", folder=True)
    source, ds = _dataset_or_input(dataset, input_path)
    src_file = getattr(ds.corpus.store, "path", None) if ds is not None else source
    if src_file is not None and Path(src_file).is_file():
        # An index is about as large as its corpus file (BM25: postings; dense: one vector per document).
        check_output(out, "--out", folder=True, min_free_bytes=Path(src_file).stat().st_size)
    progress.quiet_third_party()
    t0 = time.perf_counter()
    if runner is not None:
        encoder, options = _engine_encoder(runner, ds if ds is not None else source, encoder, options, device)
        device = None  # the encoder is built: it keeps its device
    if retriever == "bm25" and ds is not None:
        # A data set's corpus streams into a BM25 index built in parts on disk: constant memory at any size
        # (8.8M MS MARCO passages), the same index as the in-memory build, written atomically to --out.
        from attnsift.retrieval.bm25 import BM25Retriever

        r = BM25Retriever.build(ds.corpus, out, overwrite=overwrite, corpus_fingerprint=ds.corpus.fingerprint(),
                                dataset=ds.name, **options)
        built, path = time.perf_counter() - t0, out
    else:
        try:
            r = build_index(ds if ds is not None else source, retriever, encoder=encoder, options=options, device=device)
        finally:
            if runner is not None:
                runner.close()
        built = time.perf_counter() - t0
        # The index records its corpus, so searching it for another data set is caught (retrieve --index).
        path = r.save(out, overwrite=overwrite, corpus_fingerprint=r.corpus_fingerprint, dataset=r.dataset)
    enc = index_info(path)["encoder"]
    typer.echo(json.dumps({"index": str(path), "retriever": retriever, "dataset": r.dataset,
                           "input": str(source) if source is not None else None, "docs": r.num_docs,
                           "seconds": round(built, 3), "encoder": enc}, allow_nan=False))


def _engine_encoder(runner, documents, encoder: Optional[str], options: dict, device: Optional[str]):
    """``(encoder, options)`` for ``build_index`` when a dense index is encoded on ``runner``: the encoder
    built here with the encoder options (it encodes the queries and the probe), its document chunks
    planned on the engine (:func:`attnsift.engines.encoding.engine_encoder`)."""
    from attnsift.engines.encoding import engine_encoder
    from attnsift.config import config_from_options
    from attnsift.retrieval.config import DenseConfig
    from attnsift.retrieval.encoders import Encoder

    options = dict(options)
    given = options.pop("encoder", None) or options.pop("model", None)
    encoder = encoder or given or "minilm"
    enc_opts = config_from_options(DenseConfig, options).encoder_options() if options else {}
    rest = {k: v for k, v in options.items() if k not in enc_opts}
    runner.start()
    local = Encoder(encoder, device=device, **enc_opts)
    # A file the workers can read is planned as shards they read themselves; texts in memory are sent.
    return engine_encoder(local, runner, documents, device=device), rest


# --------------------------------------------------------------------------------------------- search
def _results(ranking) -> list[dict]:
    return [{"rank": j + 1, "doc_id": c.doc_id, "score": c.score,
             "title": (c.document.title if c.document else None),
             "text": (c.document.text[:200] if c.document else None)} for j, c in enumerate(ranking)]


def _print_results(out: list[dict], as_json: bool, **extra) -> None:
    if as_json:
        _print_json({**extra, "queries": out})
        return
    for item in out:
        typer.echo(f"# {item['query']}")
        if not item["results"]:
            typer.echo("  (no document matches)")
        for res in item["results"]:
            snippet = " ".join(" ".join(filter(None, (res["title"], res["text"]))).split())[:80]
            typer.echo(f"{res['rank']:>3}  {res['score']:10.4f}  {res['doc_id']}  {snippet}")


@app.command()
@_guard
def search(
    queries: Optional[List[str]] = typer.Argument(None, metavar="QUERY", help="Query texts (each one a search)."),
    index_dir: Path = typer.Option(..., "--index", help="A saved index of any kind (`attnsift index`)."),
    query: Optional[List[str]] = typer.Option(None, "--query", "-q", metavar="TEXT", help="Query text (repeatable; same as the arguments)."),
    k: int = typer.Option(10, "--k", "-k", help="Results per query."),
    reranker: str = typer.Option("none", "--reranker", help="none | icr | listwise | blockrank | cross-encoder"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="The reranker's model (default smollm2-135m; cross-encoder: required, a folder or cached hub id)."),
    depth: Optional[int] = typer.Option(None, "--depth", help="Candidates the reranker rescores (default: min(20, --first-stage-k))."),
    first_stage_k: Optional[int] = typer.Option(None, "--first-stage-k", help="Candidates from the index (default: max(--k, 20) with a reranker, else --k)."),
    option: Optional[List[str]] = typer.Option(None, "--option", metavar="KEY=VALUE", help="Reranker option (repeatable), e.g. max_words=100."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Query encoder of a dense / late / hybrid index (default: the index's)."),
    retriever_option: Optional[List[str]] = typer.Option(None, "--retriever-option", metavar="KEY=VALUE",
                                                         help="Search-time option of the index (repeatable), e.g. nprobe=32."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N for the models (default auto: CUDA when available)."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Search a saved index for query texts, optionally reranked: attnsift search --index DIR "question"."""
    from attnsift import progress
    from attnsift.config import parse_option_strings
    from attnsift.pipeline import Pipeline
    from attnsift.registry import build_reranker, check_model, check_options, index_kind, load_index
    from attnsift.types import Query, check_k

    texts = [*(queries or []), *(query or [])]
    if not texts:
        raise ValueError('give at least one query text: attnsift search --index DIR "your question"')
    for t in texts:
        if not t.strip():
            raise ValueError("a query text is empty; give every query some words to search for")
    check_k(k, "--k")
    reranked = reranker != "none"
    if not reranked and (depth is not None or model is not None or option):
        raise ValueError("--depth, --model and --option are for a reranker; add --reranker icr (or listwise, "
                         "blockrank) or drop them")
    fsk = check_k(first_stage_k, "--first-stage-k") if first_stage_k is not None else (max(k, 20) if reranked else k)
    if reranked and depth is None:
        depth = min(20, fsk)
    options = parse_option_strings(option)
    check_options("reranker", reranker, options)
    check_model("reranker", reranker, model)
    device = check_device(device)
    kind = index_kind(index_dir)
    check_model("retriever", kind if kind != "bm25-lucene" else "bm25", encoder)
    progress.quiet_third_party()
    stage = load_index(index_dir, encoder=encoder, device=device if kind in ("dense", "late", "hybrid") else None,
                       options=parse_option_strings(retriever_option))  # the loader refuses build options
    rr = build_reranker(reranker, model, options, device=device) if reranked else None
    pipe = Pipeline(stage, rr, first_stage_k=fsk, depth=depth, k=k)
    out = []
    t0 = time.perf_counter()
    for i, text in enumerate(texts):
        if rr is None:
            out.append({"query": text, "results": _results(pipe(Query(f"q{i}", text)))})
            continue
        # A language model over `depth` candidates takes seconds to minutes on a CPU: say so while it runs.
        short = text if len(text) <= 40 else text[:37] + "..."
        with progress.step(f"{reranker} reranks the top {pipe.depth} for {short!r} "
                           f"({getattr(rr, 'model_name', reranker)}, {getattr(rr, 'device', 'cpu')})"):
            out.append({"query": text, "results": _results(pipe(Query(f"q{i}", text)))})
    secs = time.perf_counter() - t0
    _print_results(out, as_json, index=str(index_dir), retriever=kind, reranker=reranker,
                   seconds=round(secs, 3))


# --------------------------------------------------------------------------------------------- retrieve
@app.command()
@_guard
def retrieve(
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Data set to search (all its queries); its provided run of the same name stands in (dl19: bm25)."),
    index_dir: Optional[Path] = typer.Option(None, "--index", help="A saved index (from `attnsift index`)."),
    query: Optional[List[str]] = typer.Option(None, "--query", "-q", metavar="TEXT", help="Ad-hoc query text (repeatable)."),
    retriever: Optional[str] = typer.Option(None, help="bm25 | dense | late | hybrid (default bm25; with --index: the index's kind)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help=_ENCODER_HELP),
    model: Optional[str] = typer.Option(None, "--model", hidden=True, help="Deprecated: --encoder."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N for the encoder (default auto: CUDA when available)."),
    k: int = typer.Option(100, "--k", "-k", help="Results per query."),
    max_queries: Optional[int] = typer.Option(None, help="Only the first N queries of the data set."),
    save_run: Optional[Path] = typer.Option(None, help="Write the run (TREC format, atomically)."),
    retriever_option: Optional[List[str]] = typer.Option(None, "--retriever-option", metavar="KEY=VALUE",
                                                         help="First-stage option (repeatable), e.g. k1=1.2."),
    option: Optional[List[str]] = typer.Option(None, "--option", hidden=True, help="Deprecated: --retriever-option."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
    force: bool = typer.Option(False, "--force", help="Search an --index built on another corpus than --dataset's (warns)."),
) -> None:
    """Run a first stage: over a data set's queries (writing a run), or for ad-hoc --query texts."""
    from attnsift.config import parse_option_strings
    from attnsift.pipeline import Pipeline, first_stage
    from attnsift import progress
    from attnsift.registry import _KIND_NAMES, build_retriever, check_model, check_options, index_kind
    from attnsift.types import Query, check_k

    encoder = _encoder(encoder, model)
    check_k(k, "--k")
    if max_queries is not None:
        check_k(max_queries, "--max-queries")
    if dataset is None and index_dir is None:
        raise ValueError("give --dataset (to index its corpus) or --index (a saved index)")
    if save_run is not None:
        check_output(save_run, "--save-run")
    options = parse_option_strings(_retriever_options(retriever_option, option))
    if index_dir is not None:
        kind = _KIND_NAMES.get(index_kind(index_dir), index_kind(index_dir))
        if retriever is not None and retriever != kind:
            raise ValueError(f"--index {index_dir} is a {kind!r} index but --retriever is {retriever!r}; "
                             f"drop --retriever (the index says its kind) or give --retriever {kind}")
        retriever = kind
    retriever = retriever or "bm25"
    if index_dir is None:  # a loaded index takes only search-time options; its load checks them
        check_options("retriever", retriever, options)
    check_model("retriever", retriever, encoder)
    device = check_device(device)
    dev = {"device": device} if retriever != "bm25" else {}
    ds = None
    if dataset is not None:
        from attnsift.eval.datasets import load_dataset

        ds = nonempty_queries(load_dataset(dataset))
        if max_queries is not None:
            ds = ds.subset(max_queries=max_queries)
        if save_run is not None:
            check_output(save_run, "--save-run", min_free_bytes=run_file_bytes(len(ds.queries), k))
    if index_dir is not None:
        if ds is not None:
            from attnsift.indexes.corpus import check_index_corpus

            check_index_corpus(index_dir, ds.corpus.fingerprint(), ds.name, force=force)
        progress.quiet_third_party()
        stage = build_retriever(retriever, None, encoder, index=index_dir, options=options, **dev)
    elif query:
        nonempty_corpus(ds)
        progress.quiet_third_party()
        stage = build_retriever(retriever, ds.corpus, encoder, options=options, **dev)
    else:
        progress.quiet_third_party()
        stage = first_stage(nonempty_corpus(ds), retriever, encoder=encoder, options=options, progress=None, **dev)
    if query:
        pipe = Pipeline(stage, first_stage_k=k)
        out = [{"query": text, "results": _results(pipe(Query(f"adhoc{i}", text)))} for i, text in enumerate(query)]
        _print_results(out, as_json)
        return
    if ds is None:
        raise ValueError("without --dataset, give one or more --query texts to search the index")
    pipe = Pipeline(stage, first_stage_k=k)
    results = list(pipe.stream(ds.queries))
    run = Run((r.ranking for r in results), name=pipe.name)
    secs = sum(r.first_stage_seconds for r in results)
    if save_run is not None:
        from attnsift.trec import write_run

        write_run(run, save_run)
    info = {"dataset": ds.name, "retriever": retriever, "first_stage": pipe.name, "queries": len(run),
            "k": k, "seconds": round(secs, 3), "queries_per_second": round(len(run) / secs, 2) if secs > 0 else None,
            "run": str(save_run) if save_run else None}
    typer.echo(json.dumps(info, allow_nan=False))

