"""First-stage commands: ``attnsift datasets``, ``index`` and ``retrieve``."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer

from attnsift.cli.app import _print_json, app
from attnsift.cli.common import check_output, guard, nonempty_corpus, nonempty_queries, run_file_bytes
from attnsift.types import Run

_guard = guard


# --------------------------------------------------------------------------------------------- datasets
@app.command()
@_guard
def datasets(
    data_dir: Optional[Path] = typer.Option(None, help="Folder of BEIR-layout data sets (default: $ATTNSIFT_DATA)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the data sets attnsift knows: local folders and ir_datasets aliases."""
    from attnsift.eval.datasets import list_datasets

    rows = list_datasets(data_dir)
    if as_json:
        _print_json({"datasets": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="attnsift data sets")
    for col in ("name", "available", "docs", "queries", "source", "path"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r.get("name")),
            "yes" if r.get("available") else "no",
            str(r.get("docs") if r.get("docs") is not None else "-"),
            str(r.get("queries") if r.get("queries") is not None else "-"),
            str(r.get("source", "")),
            str(r.get("path") or "-"),
        )
    Console(width=160).print(table)


# --------------------------------------------------------------------------------------------- index
@app.command()
@_guard
def index(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Data set name, alias or BEIR folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the index to (written atomically)."),
    retriever: str = typer.Option("bm25", help="bm25 | dense | late"),
    model: Optional[str] = typer.Option(None, help="Encoder for dense / late (default minilm)."),
    option: Optional[List[str]] = typer.Option(None, "--option", help="Engine option key=value (repeatable), e.g. k1=0.9"),
    overwrite: bool = typer.Option(False, help="Replace an existing index at --out."),
) -> None:
    """Build a first-stage index over a data set's corpus and save it."""
    from attnsift.config import parse_option_strings
    from attnsift.eval.datasets import load_dataset
    from attnsift.registry import build_retriever

    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists; pass --overwrite to replace it, or choose another --out")
    check_output(out, "--out", folder=True)
    ds = nonempty_corpus(load_dataset(dataset))
    source = getattr(ds.corpus.store, "path", None)
    if source is not None and Path(source).is_file():
        # An index is about as large as its corpus file (BM25: postings; dense: one vector per document).
        check_output(out, "--out", folder=True, min_free_bytes=Path(source).stat().st_size)
    t0 = time.perf_counter()
    r = build_retriever(retriever, ds.corpus.iter_documents(), model=model, options=parse_option_strings(option), progress=True)
    built = time.perf_counter() - t0
    # The index records its corpus, so searching it for another data set is caught (retrieve --index).
    path = r.save(out, overwrite=overwrite, corpus_fingerprint=ds.corpus.fingerprint(), dataset=ds.name)
    typer.echo(json.dumps({"index": str(path), "retriever": retriever, "dataset": ds.name, "docs": r.num_docs,
                           "seconds": round(built, 3)}, allow_nan=False))


# --------------------------------------------------------------------------------------------- retrieve
@app.command()
@_guard
def retrieve(
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Data set to search (all its queries); its provided run of the same name stands in (dl19: bm25)."),
    index_dir: Optional[Path] = typer.Option(None, "--index", help="A saved index (from `attnsift index`)."),
    query: Optional[List[str]] = typer.Option(None, "--query", "-q", help="Ad-hoc query text (repeatable)."),
    retriever: str = typer.Option("bm25", help="bm25 | dense | late | hybrid"),
    model: Optional[str] = typer.Option(None, help="Encoder for dense / late / hybrid."),
    k: int = typer.Option(100, "--k", "-k", help="Results per query."),
    max_queries: Optional[int] = typer.Option(None, help="Only the first N queries of the data set."),
    save_run: Optional[Path] = typer.Option(None, help="Write the run (TREC format, atomically)."),
    option: Optional[List[str]] = typer.Option(None, "--option", help="Engine option key=value (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
    force: bool = typer.Option(False, "--force", help="Search an --index built on another corpus than --dataset's (warns)."),
) -> None:
    """Run a first stage: over a data set's queries (writing a run), or for ad-hoc --query texts."""
    from attnsift.config import parse_option_strings
    from attnsift.pipeline import Pipeline, first_stage
    from attnsift.registry import build_retriever
    from attnsift.types import Query, check_k

    check_k(k, "--k")
    if max_queries is not None:
        check_k(max_queries, "--max-queries")
    if dataset is None and index_dir is None:
        raise ValueError("give --dataset (to index its corpus) or --index (a saved index)")
    if save_run is not None:
        check_output(save_run, "--save-run")
    options = parse_option_strings(option)
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
        stage = build_retriever(retriever, None, model=model, index=index_dir, options=options, progress=True)
    elif query:
        nonempty_corpus(ds)
        stage = build_retriever(retriever, ds.corpus.iter_documents(), model=model, options=options, progress=True)
    else:
        stage = first_stage(nonempty_corpus(ds), retriever, model=model, options=options, progress=not as_json)
    if query:
        pipe = Pipeline(stage, first_stage_k=k)
        out = []
        for i, text in enumerate(query):
            ranking = pipe(Query(f"adhoc{i}", text))
            out.append({"query": text, "results": [
                {"rank": j + 1, "doc_id": c.doc_id, "score": c.score,
                 "title": (c.document.title if c.document else None),
                 "text": (c.document.text[:200] if c.document else None)} for j, c in enumerate(ranking)]})
        if as_json:
            _print_json({"queries": out})
        else:
            for item in out:
                typer.echo(f"# {item['query']}")
                for res in item["results"]:
                    snippet = (res["title"] or res["text"] or "").replace("\n", " ")[:80]
                    typer.echo(f"{res['rank']:>3}  {res['score']:10.4f}  {res['doc_id']}  {snippet}")
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

