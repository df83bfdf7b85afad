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

#: analyze heads cuts documents shorter than the rerankers' default (300 words): 20 x 100 words fit one prompt
DEFAULT_MAX_WORDS = 100


def _reranker_options(items: Optional[List[str]], reranker: str, max_words: Optional[int],
                      block_tokens: Optional[int]) -> dict:
    """``--option`` key=value pairs plus the deprecated ``--max-words`` / ``--block-tokens`` spellings."""
    from attnsift.config import parse_option_strings
    from attnsift.errors import deprecated

    options = parse_option_strings(items)
    for fixed in ("window", "heads"):
        if fixed in options:
            raise ValueError(f"--option {fixed}=... is not for analyze heads: "
                             + ("use --depth" if fixed == "window" else "the analysis reads every head"))
    for key, value in (("max_words", max_words), ("block_tokens", block_tokens)):
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        deprecated(flag, f"--option {key}={value}")
        if key in options and options[key] != str(value):
            raise ValueError(f"{flag} {value} and --option {key}={options[key]} disagree; give only --option {key}=N")
        if key == "block_tokens" and reranker != "blockrank":
            continue  # as before: --block-tokens is BlockRank's, ICR ignores it
        options[key] = str(value)
    options.setdefault("max_words", str(DEFAULT_MAX_WORDS))
    return options


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
    option: Optional[List[str]] = typer.Option(
        None, "--option", metavar="KEY=VALUE", help=f"Reranker option key=value (repeatable): max_words (default {DEFAULT_MAX_WORDS} here), "
                               "block_tokens (BlockRank), query_positions...; the default features folder's name "
                               "then carries the options."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (default auto: CUDA when available)."),
    figures: Optional[Path] = typer.Option(None, "--figures", help="Folder for the PNG heatmap and layer curve (default: beside --out)."),
    all_lists: bool = typer.Option(False, "--all-lists",
                                   help="Select on every held-out list, also those shorter than --depth (default: full lists only)."),
    features: Optional[Path] = typer.Option(None, "--features",
                                            help="Folder of the per-query head masses (default: under $ATTNSIFT_CACHE/heads)."),
    max_words: Optional[int] = typer.Option(None, "--max-words", hidden=True, help="Deprecated: --option max_words=N."),
    block_tokens: Optional[int] = typer.Option(None, "--block-tokens", hidden=True,
                                               help="Deprecated: --option block_tokens=N."),
) -> None:
    """Per-(layer, head) nDCG@10 on held-out queries, the head selection, a heatmap and a layer curve.

    One ICR pass per query stores every head's document masses (resumable); the selection of heads,
    calibration variant, combination and fusion weight is then arithmetic on them. Everything that can be
    checked (options, paths, model name, enough held-out queries with full BM25 lists) is checked before
    the model loads. Use the profile with `--reranker "icr[heads=<profile.json>]"`.
    """
    from attnsift.analysis.heads import collect_head_masses, features_folder, load_head_masses
    from attnsift.analysis.headsel import judge, make_profile, plot_head_heatmap, plot_layer_curve, select
    from attnsift.analysis.heldout import MIN_HELDOUT_QUERIES, check_heldout
    from attnsift.cli.common import check_device
    from attnsift.config import config_from_options
    from attnsift.eval.datasets import load_dataset
    from attnsift.io import atomic_write_json
    from attnsift.pipeline import Pipeline, check_cuts, first_stage, provided_run
    from attnsift.rerank.llm import check_model_name
    from attnsift.types import check_k

    # ---- checks before any work: options, paths, device, model name
    check_cuts(depth=depth)
    if max_queries is not None:
        check_k(max_queries, "--max-queries")
    if out.suffix != ".json":
        raise ValueError(f"--out must name a .json file, got {out}")
    if reranker not in ("icr", "blockrank"):
        raise ValueError(f"--reranker must be icr or blockrank, got {reranker!r}")
    check_output(out, "--out")
    for folder, name in ((figures, "--figures"), (features, "--features")):
        if folder is not None:
            check_output(folder, name, folder=True)
    device = check_device(device)
    options = _reranker_options(option, reranker, max_words, block_tokens)
    if reranker == "icr":
        from attnsift.rerank.icr import ICRReranker as cls
    else:
        from attnsift.rerank.blockrank import BlockRankReranker as cls
    cfg = config_from_options(cls.config_class, options)  # rejects unknown options and bad values
    words = cfg.max_words
    check_model_name(model)

    # ---- the held-out queries, counted with BM25 only (seconds), before the model loads
    full = load_dataset(dataset, split=split)
    ds = full.subset(max_queries=max_queries) if max_queries is not None else full
    if split == "test":
        typer.echo("warning: selecting on the test split; report figures on other queries", err=True)
    first = first_stage(full, "bm25", run=provided_run(full, "bm25"))
    # The analysis scores every head itself: the pipeline gives BM25's top `depth` with their texts.
    run = Pipeline(first, k=depth, corpus=ds.corpus).run(ds.queries)
    def every_query():  # called only when too few: for the "raise --max-queries to >= N" figure
        return Pipeline(first, k=depth).run(full.queries)

    full_run = every_query if len(full.queries) > len(ds.queries) else None
    picked_ids = check_heldout(run, full.qrels, depth, all_lists=all_lists, where=f"{ds.name} {split}",
                               max_queries=max_queries, full_run=full_run)

    # ---- the expensive part: the model, one pass per query
    rr = cls(model, device=device, **({"window": max(depth, 20)} if reranker == "icr" else {}), **options)
    from attnsift.fingerprint import cache_root

    root = cache_root() / "heads"
    # max_words has its own place in the folder name and the profile, block_tokens in the profile
    slug_options = {k: v for k, v in options.items() if k not in ("max_words", "block_tokens")}
    slug = (model if reranker == "icr" else f"blockrank-{model}") + "".join(f"-{k}={v}" for k, v in sorted(slug_options.items()))
    folder = features or features_folder(root, slug, ds.name, split, "bm25", depth, words)
    collect_head_masses(rr, run, folder, top_k=depth,
                        meta={"dataset": ds.name, "split": split, "first_stage": "bm25"},
                        hint="--max-queries, --depth or --option max_words= shorten it")
    judged = judge(load_head_masses(folder, list(run)), ds.qrels)
    picked = [j for j in judged if j.f.qid in set(picked_ids)]
    if len(picked) < MIN_HELDOUT_QUERIES:  # the masses on disk disagree with the count above
        raise ValueError(f"only {len(picked)} of the {len(picked_ids)} held-out queries counted have head masses "
                         f"in {folder}; delete that folder and rerun")
    analysis = select(picked) if reranker == "icr" else select(picked, variants=("raw",))
    mcfg = rr.model.config.get_text_config()
    where = {"dataset": ds.name, "split": split, "queries": len(picked), "judged_queries": len(judged),
             "full_lists_only": not all_lists, "first_stage": "bm25", "top_k": depth, "max_words": words,
             "max_queries": max_queries, **({"options": slug_options} if slug_options else {})}
    profile = make_profile(analysis, model, mcfg.num_hidden_layers, mcfg.num_attention_heads, where)
    profile["reranker"] = reranker
    if reranker == "blockrank":
        curve = profile["per_layer"]["raw"]
        profile["scoring_layer"] = int(max(range(len(curve)), key=lambda l: (curve[l], -l)))
        profile["block_tokens"] = cfg.block_tokens
    profile["command"] = " ".join(["attnsift", *sys.argv[1:]])
    atomic_write_json(out, profile)
    fig_dir = figures or out.parent
    fig_dir.mkdir(parents=True, exist_ok=True)
    heat = plot_head_heatmap(profile, fig_dir / f"{out.stem}.heads.png",
                             variants=("raw", "norm", "masked") if reranker == "icr" else ("raw",))
    curve = plot_layer_curve(profile, fig_dir / f"{out.stem}.layers.png")
    sel, fus = profile["selection"], profile["fusion"]
    typer.echo(f"held-out: {ds.name} {split}, {len(picked)} queries ({'full' if not all_lists else 'all'} lists of "
               f"{len(judged)} judged), BM25 top-{depth}, {words}-word documents")
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
