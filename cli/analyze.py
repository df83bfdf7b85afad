"""``attnsift analyze ...``: analyses of the attention rerankers (typer sub-app ``analyze_app``).

Only typer is imported at module level; torch and transformers load when a command runs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from attnsift.cli.common import check_output, guard

analyze_app = typer.Typer(
    help="Analyse attention rerankers: which heads and layers carry relevance.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@analyze_app.callback()
def _analyze() -> None:
    """Analyse attention rerankers: which heads and layers carry relevance."""


_guard = guard


@analyze_app.command("heads")
@_guard
def heads(
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Alias, folder, .gguf file or hub id."),
    reranker: str = typer.Option("icr", "--reranker", help="icr (query and N/A masses) or blockrank (per-head block scores)."),
    dataset: str = typer.Option("nfcorpus", "--dataset", "-d", help="HELD-OUT data: alias, folder or ir_datasets id."),
    split: str = typer.Option("dev", "--split", help="Qrels split to select on (never the one you report)."),
    out: Path = typer.Option(..., "--out", "-o", help="Profile JSON to write (PNG figures are written beside it)."),
    max_queries: Optional[int] = typer.Option(None, "--max-queries", help="Only the first N queries of the split."),
    depth: int = typer.Option(20, "--depth", help="How many BM25 candidates per query the analysis reranks."),
    max_words: int = typer.Option(100, "--max-words", help="Words kept per document."),
    block_tokens: int = typer.Option(384, "--block-tokens", help="BlockRank: tokens per document block."),
    figures: Optional[Path] = typer.Option(None, "--figures", help="Folder for the PNG heatmap and layer curve (default: beside --out)."),
    all_lists: bool = typer.Option(False, "--all-lists",
                                   help="Select on every held-out list, also those shorter than --depth (default: full lists only)."),
    features: Optional[Path] = typer.Option(None, "--features",
                                            help="Folder of the per-query head masses (default: under $ATTNSIFT_CACHE/heads)."),
    option: Optional[List[str]] = typer.Option(
        None, "--option", help="Reranker option key=value (repeatable), e.g. query_positions=64 for BlockRank; the "
                               "default features folder's name then carries the options."),
) -> None:
    """Per-(layer, head) nDCG@10 on held-out queries, the head selection, a heatmap and a layer curve.

    One ICR pass per query stores every head's document masses (resumable); the selection of heads,
    calibration variant, combination and fusion weight is then arithmetic on them. Use the profile with
    `--reranker "icr[heads=<profile.json>]"`.
    """
    from attnsift.analysis.heads import collect_head_masses, features_folder, load_head_masses
    from attnsift.analysis.headsel import judge, make_profile, plot_head_heatmap, plot_layer_curve, select
    from attnsift.config import parse_option_strings
    from attnsift.eval.datasets import load_dataset
    from attnsift.io import atomic_write_json
    from attnsift.pipeline import Pipeline, check_cuts, first_stage, provided_run
    from attnsift.rerank.icr import ICRReranker

    check_cuts(depth=depth)
    if out.suffix != ".json":
        raise ValueError(f"--out must name a .json file, got {out}")
    if reranker not in ("icr", "blockrank"):
        raise ValueError(f"--reranker must be icr or blockrank, got {reranker!r}")
    check_output(out, "--out")
    for folder, name in ((figures, "--figures"), (features, "--features")):
        if folder is not None:
            check_output(folder, name, folder=True)
    options = parse_option_strings(option)
    for fixed in ("max_words", "block_tokens", "window", "heads"):
        if fixed in options:
            raise ValueError(f"--option {fixed}=... is not for analyze heads: "
                             + ("use --max-words / --block-tokens / --depth" if fixed != "heads" else
                                "the analysis reads every head"))
    ds = load_dataset(dataset, split=split)
    if max_queries is not None:
        ds = ds.subset(max_queries=max_queries)
    if split == "test":
        typer.echo("warning: selecting on the test split; report figures on other queries", err=True)
    provided = provided_run(ds, "bm25")
    if reranker == "icr":
        rr = ICRReranker(model, max_words=max_words, window=max(depth, 20), **options)
    else:
        from attnsift.rerank.blockrank import BlockRankReranker

        rr = BlockRankReranker(model, max_words=max_words, block_tokens=block_tokens, **options)
    # The analysis scores every head itself: the pipeline gives BM25's top `depth` with their texts.
    run = Pipeline(first_stage(ds, "bm25", run=provided), k=depth, corpus=ds.corpus).run(ds.queries)
    from attnsift.fingerprint import cache_root

    root = cache_root() / "heads"
    slug = (model if reranker == "icr" else f"blockrank-{model}") + "".join(f"-{k}={v}" for k, v in sorted(options.items()))
    folder = features or features_folder(root, slug, ds.name, split, "bm25", depth, max_words)
    collect_head_masses(rr, run, folder, top_k=depth, progress=True,
                        meta={"dataset": ds.name, "split": split, "first_stage": "bm25"})
    judged = judge(load_head_masses(folder, list(run)), ds.qrels)
    if len(judged) < 5:
        raise ValueError(f"only {len(judged)} queries with judgements in {dataset} {split}; select on more queries")
    if all_lists:
        picked = judged
    else:
        # Lists shorter than depth (queries BM25 finds few documents for) carry little ranking signal and
        # another position structure than the full lists rerankers see in use: select on full lists.
        picked = [j for j in judged if len(j.f.doc_ids) >= depth]
        if len(picked) < 5:
            raise ValueError(f"only {len(picked)} held-out queries have {depth} candidates; use --all-lists or more queries")
    analysis = select(picked) if reranker == "icr" else select(picked, variants=("raw",))
    cfg = rr.model.config.get_text_config()
    where = {"dataset": ds.name, "split": split, "queries": len(picked), "judged_queries": len(judged),
             "full_lists_only": not all_lists, "first_stage": "bm25", "top_k": depth, "max_words": max_words,
             "max_queries": max_queries, **({"options": options} if options else {})}
    profile = make_profile(analysis, model, cfg.num_hidden_layers, cfg.num_attention_heads, where)
    profile["reranker"] = reranker
    if reranker == "blockrank":
        curve = profile["per_layer"]["raw"]
        profile["scoring_layer"] = int(max(range(len(curve)), key=lambda l: (curve[l], -l)))
        profile["block_tokens"] = block_tokens
    profile["command"] = " ".join(["attnsift", *sys.argv[1:]])
    atomic_write_json(out, profile)
    fig_dir = figures or out.parent
    fig_dir.mkdir(parents=True, exist_ok=True)
    heat = plot_head_heatmap(profile, fig_dir / f"{out.stem}.heads.png",
                             variants=("raw", "norm", "masked") if reranker == "icr" else ("raw",))
    curve = plot_layer_curve(profile, fig_dir / f"{out.stem}.layers.png")
    sel, fus = profile["selection"], profile["fusion"]
    typer.echo(f"held-out: {ds.name} {split}, {len(picked)} queries ({'full' if not all_lists else 'all'} lists of "
               f"{len(judged)} judged), BM25 top-{depth}, {max_words}-word documents")
    typer.echo(f"first stage nDCG@10        {profile['first_stage']:.4f}")
    for v, x in profile["all_heads"].items():
        typer.echo(f"all heads, {v:<8}         {x:.4f}")
    if reranker == "blockrank":
        typer.echo(f"scoring layer (best on held-out): {profile['scoring_layer']}  "
                   f"{profile['per_layer']['raw'][profile['scoring_layer']]:.4f}")
    typer.echo(f"selected: {sel['k']} heads, {sel['variant']}/{sel['aggregate']}  {sel['heldout_ndcg']:.4f}  "
               f"heads {[tuple(h) for h in sel['heads'][:8]]}{' ...' if sel['k'] > 8 else ''}")
    typer.echo(f"fused ({fus['method']}, attention weight {fus['weight']:.2f})   {fus['heldout_ndcg']:.4f}")
    typer.echo(f"wrote {out}, {heat}, {curve}")
    typer.echo(json.dumps({"profile": str(out)}, allow_nan=False))
