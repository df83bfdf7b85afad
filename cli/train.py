"""``attnsift train ...``: fine-tuning commands (typer sub-app ``train_app``).

Registered in :mod:`attnsift.cli.main` with ``app.add_typer(train_app, name="train")``. Only typer is
imported at module level; torch and transformers load when a command runs.
"""
from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Optional

import typer

from attnsift.cli.common import check_device, check_output, concrete_device, guard
from attnsift.types import check_k

train_app = typer.Typer(
    help="Fine-tune models for the attention rerankers (BlockRank).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@train_app.callback()
def _train() -> None:
    """Fine-tune models for the attention rerankers (BlockRank)."""
    # A callback keeps `train` a command group even while it has a single command.


_guard = guard


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


@train_app.command("blockrank")
@_guard
def blockrank(
    dataset: str = typer.Option("nfcorpus", "--dataset", "-d", help="Training data: alias, folder or ir_datasets id."),
    split: str = typer.Option("train", "--split", help="Qrels split to train on (nfcorpus: train)."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Starting model: alias, folder, .gguf or hub id."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: checkpoints/, loss.jsonl, model/ (the result)."),
    max_queries: Optional[int] = typer.Option(None, "--max-queries", help="N training queries with relevant documents."),
    query_sample: str = typer.Option("random", "--query-sample",
                                     help="How --max-queries picks them: random (seeded sample) or first (file order)."),
    candidates: int = typer.Option(30, "--candidates", help="Documents per prompt (relevant + BM25 negatives)."),
    max_positives: int = typer.Option(5, "--max-positives", help="Relevant documents per prompt, at most."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps (default: one epoch)."),
    lr: float = typer.Option(3e-6, "--lr", help="AdamW learning rate."),
    warmup_steps: int = typer.Option(0, "--warmup-steps", help="Linear warm-up steps, then a constant lr."),
    lambda_aux: float = typer.Option(0.1, "--lambda-aux", help="Weight of the InfoNCE term over the attention scores."),
    tau: float = typer.Option(0.05, "--tau", help="InfoNCE temperature."),
    block_tokens: int = typer.Option(160, "--block-tokens", help="H: tokens per document block, at most."),
    max_words: int = typer.Option(300, "--max-words", help="Document content cut to this many words."),
    scoring_layer: Optional[int] = typer.Option(None, "--scoring-layer", help="0-based layer of the scores (default: middle)."),
    batch_size: int = typer.Option(1, "--batch-size", help="Prompts per micro-step (accumulated one by one)."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Micro-steps per optimizer step."),
    weight_decay: float = typer.Option(0.0, "--weight-decay"),
    max_grad_norm: Optional[float] = typer.Option(1.0, "--max-grad-norm", help="Gradient clipping norm."),
    seed: int = typer.Option(0, "--seed", help="Seeds sampling, shuffles and torch."),
    save_every: int = typer.Option(50, "--save-every", help="Checkpoint every N steps (and at the end)."),
    keep_checkpoints: int = typer.Option(1, "--keep-checkpoints", help="Latest checkpoints kept."),
    gradient_checkpointing: bool = typer.Option(True, "--gradient-checkpointing/--no-gradient-checkpointing"),
    attn_impl: str = typer.Option("auto", "--attn-impl", help="auto, reference, flex or dense."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (default auto: CUDA when available)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (1 is fastest on a busy shared CPU)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing training run in --out first."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", hidden=True,
                                            help="Deprecated: progress is on by default; the global --quiet turns it off."),
    verbose: bool = typer.Option(False, "--verbose", "-v", hidden=True, help="Deprecated: the global -v (attnsift -v train ...)."),
) -> None:
    """Fine-tune a causal LM for BlockRank: L = L_lm + lambda * InfoNCE(scoring-layer attention scores).

    Prints a JSON summary. The trained model is OUT/model: pass it as --model to `attnsift rerank --reranker blockrank` with the same scoring layer.
    """
    from attnsift.errors import deprecated

    if verbose:
        deprecated("train blockrank -v/--verbose", "the global option: attnsift -v train blockrank ...")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        logging.getLogger().setLevel(logging.INFO)
    if progress is not None:
        deprecated("train blockrank --progress/--no-progress", "the default (progress on) or the global --quiet")
        if progress is False:
            from attnsift import progress as _progress

            _progress.configure(False)
            progress = None
    check_output(out, "--out", folder=True)
    device = concrete_device(check_device(device))  # the trainer takes cpu / cuda / cuda:N
    if max_queries is not None:
        check_k(max_queries, "--max-queries")
    from attnsift.train.blockrank import TrainConfig, train_blockrank

    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)

    config = TrainConfig(
        dataset=dataset, split=split, model=model, max_queries=max_queries, query_sample=query_sample,
        candidates=candidates,
        max_positives=max_positives, steps=steps, lr=lr, warmup_steps=warmup_steps, lambda_aux=lambda_aux,
        tau=tau, block_tokens=block_tokens, max_words=max_words, scoring_layer=scoring_layer,
        batch_size=batch_size, grad_accum=grad_accum, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
        seed=seed, save_every=save_every, keep_checkpoints=keep_checkpoints,
        gradient_checkpointing=gradient_checkpointing, attn_impl=attn_impl, device=device, progress=progress,
    )
    result = train_blockrank(config, out, resume=resume, overwrite=overwrite)
    first = result.history[0] if result.history else None
    last = result.history[-1] if result.history else None
    typer.echo(json.dumps({
        "out": str(result.out),
        "model": str(result.model_dir),
        "scoring_layer": result.scoring_layer,
        "steps": result.steps,
        "start_step": result.start_step,
        "examples": result.num_examples,
        # JSON has no NaN: a diverged loss is null, and the loss log (OUT/loss.jsonl) has every step.
        "first_loss": _finite(first and first["loss"]),
        "last_loss": _finite(last and last["loss"]),
        "seconds": round(result.seconds, 1),
    }, indent=2, allow_nan=False))
