"""Fine-tuning a causal LM for BlockRank (METHODS.md section 2; issue 5, item 4): the configuration
and the training loop.

Loss per training prompt: ``L = L_lm + lambda * L_aux`` (:mod:`attnsift.train.losses`); prompts are
relevant documents + BM25 negatives, built as at inference (:mod:`attnsift.train.blockrank_data`);
the output folder holds resumable, atomic checkpoints and the loss log
(:mod:`attnsift.train.checkpoints`)::

    OUT/train_config.json          the configuration (a resume must match it)
    OUT/loss.jsonl                 {"step", "loss", "l_lm", "l_aux", "lr", "seconds"} per optimizer step
    OUT/checkpoints/step-000050/   model + tokenizer + trainer_state.pt (step, optimizer, RNG states)
    OUT/model/                     the final model + tokenizer: load_causal_lm(OUT/model),
                                   BlockRankReranker(model=OUT/model)

The whole plan (examples and their order over epochs) is a function of the seed, so a resumed run
sees exactly the prompts an uninterrupted one would. The names of the three modules above are
re-exported here.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from attnsift.config import config_from_options
from attnsift.train.blockrank_data import (
    QUERY_SAMPLES,
    EncodedExample,
    TrainExample,
    build_examples,
    encode_example,
    examples_digest,
)
from attnsift.train.checkpoints import (
    CONFIG_FILE,
    LOSS_FILE,
    STATE_FILE,
    check_resume_config,
    config_dict,
    list_checkpoints,
    load_model,
    load_state,
    prepare_out,
    remove_partial_checkpoints,
    restore_state,
    rewrite_log,
    save_checkpoint,
)
from attnsift.train.losses import (
    ATTN_IMPLS,
    differentiable_document_scores,
    enable_gradient_checkpointing,
    example_losses,
    info_nce,
    resolve_attn_impl,
)

if TYPE_CHECKING:  # pragma: no cover
    from attnsift.eval.datasets import Dataset

__all__ = ["TrainConfig", "TrainResult", "train_blockrank", "QUERY_SAMPLES", "TrainExample", "EncodedExample",
           "build_examples", "encode_example", "examples_digest", "info_nce", "differentiable_document_scores",
           "enable_gradient_checkpointing", "example_losses", "prepare_out", "STATE_FILE", "CONFIG_FILE",
           "LOSS_FILE"]

log = logging.getLogger(__name__)

# Earlier names, imported by benchmarks/ and by runs' tooling.
_check_resume_config = check_resume_config
_load_model = load_model


@dataclass(frozen=True)
class TrainConfig:
    """Options of :func:`train_blockrank` (unknown keys are rejected by :func:`config_from_options`).

    Attributes
    ----------
    dataset, split : str
        Training data (:func:`attnsift.eval.datasets.load_dataset`), e.g. ``nfcorpus`` / ``train``.
    model : str
        Starting model: alias (``smollm2-135m``), folder, .gguf file or hub id.
    max_queries : int or None
        Use N of the queries that have relevant documents (see ``query_sample``); None = all.
    query_sample : str
        How ``max_queries`` picks them: ``random`` (a seeded sample, kept in file order; the default) or
        ``first`` (file order). NFCorpus train lists related queries together: 94% of its first 200
        share a relevant document with one of the 5 queries before them (a random 200: 32%), so in file
        order a prompt's positives were mostly seen a few steps earlier and the attention loss falls
        by recognising them, not by learning relevance (``experiments/blockrank_finetune/results/blockrank_train.md``).
    candidates : int
        Documents per prompt (relevant + BM25 negatives) [30 in the paper].
    max_positives : int
        At most this many relevant documents per prompt, and at most ``candidates - 1`` (NFCorpus
        queries have dozens; the rest of the prompt is BM25 negatives).
    steps : int or None
        Optimizer steps; None = one epoch over the training queries.
    lr : float
        AdamW learning rate [3e-6]; linear warm-up over ``warmup_steps`` then constant.
    lambda_aux, tau : float
        Weight and temperature of the InfoNCE term [0.1, 0.05].
    block_tokens : int
        H, the per-document token budget [160 in training].
    max_words : int
        Document content cut to this many words before tokenization.
    scoring_layer : int or None
        0-based layer whose attention is trained by ``L_aux``; None = the middle layer. Use the same
        layer at inference.
    query_positions : int
        Scoring rows (the last prompt tokens) [2].
    final_offset : int
        First position of the last block (clamped to the model's context, as at inference).
    batch_size, grad_accum : int
        Prompts per optimizer step = ``batch_size * grad_accum``. BlockRank's forward takes one
        prompt at a time, so both accumulate gradients prompt by prompt (same result, same memory).
    weight_decay : float
        AdamW weight decay.
    max_grad_norm : float or None
        Gradient clipping (None: none).
    seed : int
        Seeds the candidate sampling, the shuffles and torch.
    save_every : int
        Checkpoint every N optimizer steps (and always at the end).
    keep_checkpoints : int
        How many of the latest checkpoints to keep (each holds the model and the AdamW state).
    gradient_checkpointing : bool
        Recompute each decoder layer in the backward pass instead of storing its activations.
    attn_impl : str
        Block-sparse attention in training: ``auto`` (= ``reference``, the blockwise PyTorch
        reference, differentiable, linear memory), ``reference``, ``flex`` (FlexAttention; untested
        on GPU here), ``dense`` (quadratic oracle). The Triton kernel is forward-only and not offered.
    device : str or None
        ``cpu`` / ``cuda``; None = CUDA when available. Weights and AdamW state are float32; on CUDA
        the forward runs under bfloat16 autocast (bf16 weights would round lr 3e-6 updates away).
    bm25_depth : int
        BM25 results looked at per query for negatives, beyond the relevant ones.
    """

    dataset: str = "nfcorpus"
    split: str = "train"
    model: str = "smollm2-135m"
    max_queries: int | None = None
    query_sample: str = "random"
    candidates: int = 30
    max_positives: int = 5
    steps: int | None = None
    lr: float = 3e-6
    warmup_steps: int = 0
    lambda_aux: float = 0.1
    tau: float = 0.05
    block_tokens: int = 160
    max_words: int = 300
    scoring_layer: int | None = None
    query_positions: int = 2
    final_offset: int = 16384
    batch_size: int = 1
    grad_accum: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    seed: int = 0
    save_every: int = 50
    keep_checkpoints: int = 1
    gradient_checkpointing: bool = True
    attn_impl: str = "auto"
    device: str | None = None
    bm25_depth: int = 100
    progress: bool | None = None

    def __post_init__(self) -> None:
        def pos_int(name: str, minimum: int = 1) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")

        for name in ("dataset", "split", "model"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"{name} must be a non-empty string, got {v!r}")
        if isinstance(self.candidates, bool) or not isinstance(self.candidates, int) or self.candidates < 2:
            raise ValueError(
                f"candidates must be an integer >= 2 (a prompt needs a relevant document and at least one "
                f"BM25 negative), got {self.candidates!r}; e.g. --candidates 30"
            )
        for name in ("max_positives", "block_tokens", "max_words", "query_positions", "final_offset",
                     "batch_size", "grad_accum", "save_every", "keep_checkpoints", "bm25_depth"):
            pos_int(name)
        pos_int("warmup_steps", 0)
        pos_int("seed", 0)
        if self.max_queries is not None:
            pos_int("max_queries")
        if self.steps is not None:
            pos_int("steps")
        if self.scoring_layer is not None:
            pos_int("scoring_layer", 0)
        for name in ("lr", "tau"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}"
                                 + (" (e.g. --lr 3e-6)" if name == "lr" else " (e.g. --tau 0.05)"))
        for name in ("lambda_aux", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        if self.max_grad_norm is not None and (not isinstance(self.max_grad_norm, (int, float))
                                               or isinstance(self.max_grad_norm, bool) or not self.max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be a positive number or None, got {self.max_grad_norm!r}")
        if self.query_sample not in QUERY_SAMPLES:
            raise ValueError(f"query_sample must be one of {', '.join(QUERY_SAMPLES)}, got {self.query_sample!r}")
        if self.attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {', '.join(ATTN_IMPLS)}, got {self.attn_impl!r}")
        if self.block_tokens < 16:
            raise ValueError(f"block_tokens must be >= 16 (the ID frame alone takes ~12 tokens), got {self.block_tokens}")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "TrainConfig":
        return config_from_options(cls, options)


@dataclass
class TrainResult:
    """What :func:`train_blockrank` did.

    Attributes
    ----------
    out : Path
        The output folder.
    model_dir : Path
        The final model folder (``out/model``), loadable with ``load_causal_lm`` / ``BlockRankReranker``.
    steps : int
        Optimizer steps done in total (including those before a resume).
    start_step : int
        The step this call started from (0, or the resumed checkpoint's).
    num_examples : int
        Training prompts per epoch.
    scoring_layer : int
    history : list of dict
        The loss log lines of this call.
    seconds : float
        Wall time of this call.
    """

    out: Path
    model_dir: Path
    steps: int
    start_step: int
    num_examples: int
    scoring_layer: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _plan(num_examples: int, total_prompts: int, seed: int) -> list[int]:
    """Example index of each prompt: epochs of seeded permutations, concatenated."""
    order: list[int] = []
    epoch = 0
    while len(order) < total_prompts:
        perm = list(range(num_examples))
        random.Random(f"{seed}|epoch{epoch}").shuffle(perm)
        order += perm
        epoch += 1
    return order[:total_prompts]


def _lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then constant."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr



def check_scoring_window(text_config: Any, layer: int, examples: Sequence[TrainExample], tokenizer: Any,
                         enc_kw: dict[str, Any]) -> None:
    """Refuse, before training, a sliding-window scoring ``layer`` whose window does not reach from the first
    scoring row back to the first document of some prompt: the loss would train scores the layer cannot see
    (the reranker refuses such prompts at inference too)."""
    from attnsift.rerank.blockrank import layer_chunk, layer_window

    window, chunk = layer_window(text_config, layer), layer_chunk(text_config, layer)
    if window is None and chunk is None:
        return
    blind, longest = 0, 0
    for ex in examples:
        enc = encode_example(ex, tokenizer, **enc_kw)
        longest = max(longest, enc.prompt_tokens)
        first_doc = int(enc.block_offsets[1])
        if window is not None:
            blind += int(enc.query_rows[0]) - window + 1 > first_doc
        else:
            blind += int(enc.query_rows[-1]) // chunk * chunk > first_doc
    if blind:
        what = f"a sliding-window layer (window {window})" if window is not None else \
            f"a chunked-attention layer (chunks of {chunk} tokens)"
        raise ValueError(
            f"scoring layer {layer} is {what} that does not reach back to the first "
            f"document in {blind} of {len(examples)} training prompts (longest {longest} tokens); train a "
            "full-attention layer (--option scoring_layer=) or shorten the prompts (fewer --candidates, a smaller "
            "block_tokens)")


def train_blockrank(config: TrainConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False,
                    dataset: "Dataset | None" = None, examples: Sequence[TrainExample] | None = None) -> TrainResult:
    """Fine-tune ``config.model`` for BlockRank; write checkpoints, the loss log and ``out/model``.

    Parameters
    ----------
    config : TrainConfig
    out : str or Path
        Output folder (see the module docstring for its layout).
    resume : bool
        Continue from the latest checkpoint in ``out`` (same options required; ``steps`` may grow).
        The result equals an uninterrupted run.
    overwrite : bool
        Delete an existing training run in ``out`` first.
    dataset : Dataset, optional
        Use this instead of loading ``config.dataset`` / ``config.split``.
    examples : sequence of TrainExample, optional
        Use these prompts instead of sampling them from the data set (tests, custom data).

    Returns
    -------
    TrainResult
    """
    import torch

    from attnsift.io import atomic_dir, atomic_write_json

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    t_start = time.perf_counter()
    out = prepare_out(out, resume, overwrite, clear=False)  # nothing is deleted before the data loads
    if resume and (out / CONFIG_FILE).is_file():
        check_resume_config(json.loads((out / CONFIG_FILE).read_text(encoding="utf-8")), config, out)
    # Checks before the data loads: the device's spelling and the starting model's name (a resumed run
    # loads its checkpoint instead).
    from attnsift.config import resolve_device

    try:
        device = torch.device(resolve_device(config.device))  # None / "auto": CUDA when available, else the CPU
    except RuntimeError:
        raise ValueError(f"device {config.device!r} is not a device; give auto, cpu, cuda or cuda:N") from None
    if not (resume and out.is_dir() and list_checkpoints(out)):
        from attnsift.rerank.llm import check_model_name

        check_model_name(config.model)

    if examples is None:
        if dataset is None:
            from attnsift.eval.datasets import load_dataset

            dataset = load_dataset(config.dataset, split=config.split)
        examples = build_examples(dataset, config.candidates, config.max_positives, seed=config.seed,
                                  max_queries=config.max_queries, bm25_depth=config.bm25_depth,
                                  progress=config.progress, sample=config.query_sample)
    examples = list(examples)
    if not examples:
        raise ValueError("no training examples")
    digest = examples_digest(examples)
    out = prepare_out(out, resume, overwrite)
    ckpts = list_checkpoints(out) if resume else []
    remove_partial_checkpoints(out)

    start_step = 0
    state = None
    if ckpts:
        state = load_state(ckpts[-1], digest)
        start_step = int(state["step"])
        model, tokenizer = load_model(str(ckpts[-1]), device)
        log.info("resuming from %s (step %d)", ckpts[-1], start_step)
    else:
        torch.manual_seed(config.seed)
        model, tokenizer = load_model(config.model, device)

    tcfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    num_layers = int(tcfg.num_hidden_layers)
    from attnsift.rerank.blockrank import default_scoring_layer

    # The reranker's default (the middle layer, or the full-attention layer nearest it): train what it reads.
    layer = default_scoring_layer(tcfg, num_layers) if config.scoring_layer is None else config.scoring_layer
    if not 0 <= layer < num_layers:
        raise ValueError(f"scoring_layer={layer} is out of range: the model has {num_layers} layers (0..{num_layers - 1})")
    max_positions = getattr(tcfg, "max_position_embeddings", None)
    enc_kw = dict(block_tokens=config.block_tokens, max_words=config.max_words, final_offset=config.final_offset,
                  max_positions=max_positions, query_positions=config.query_positions)
    check_scoring_window(tcfg, layer, examples, tokenizer, enc_kw)

    per_step = config.batch_size * config.grad_accum
    total_steps = config.steps if config.steps is not None else math.ceil(len(examples) / per_step)
    if total_steps < start_step:
        raise ValueError(
            f"--steps {total_steps} is below the step of the checkpoint to resume ({start_step}, in {ckpts[-1]}); "
            f"give --steps >= {start_step}"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CONFIG_FILE, config_dict(config))
    log_path = out / LOSS_FILE
    if resume:
        rewrite_log(log_path, start_step)
    elif log_path.exists():
        log_path.unlink()

    model.train()
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if state is not None:
        restore_state(optimizer, state)
    attn_impl = resolve_attn_impl(config.attn_impl, device)
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None
    plan = _plan(len(examples), total_steps * per_step, config.seed)

    history: list[dict] = []
    from attnsift.progress import Estimator, bar as progress_bar

    bar = progress_bar(desc="blockrank train", total=total_steps, initial=start_step, unit="step",
                       progress=config.progress)
    estimate = Estimator(total_steps - start_step, "steps", hint="--steps, --max-queries or --candidates shorten it",
                         progress=config.progress, device=str(device))
    last_saved = start_step if ckpts else -1
    try:
        with open(log_path, "a", encoding="utf-8") as logf:
            for step in range(start_step, total_steps):
                t0 = time.perf_counter()
                lr = _lr_at(step, config)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                sums = {"loss": 0.0, "l_lm": 0.0, "l_aux": 0.0}
                for idx in plan[step * per_step:(step + 1) * per_step]:
                    enc = encode_example(examples[idx], tokenizer, **enc_kw)
                    parts = example_losses(model, enc, scoring_layer=layer, lambda_aux=config.lambda_aux,
                                           tau=config.tau, attn_impl=attn_impl, backward_scale=1.0 / per_step,
                                           autocast_dtype=autocast_dtype)
                    for key in sums:
                        sums[key] += float(parts[key]) / per_step
                if not all(math.isfinite(v) for v in sums.values()):
                    raise FloatingPointError(f"non-finite loss at step {step + 1}: {sums}; lower --lr")
                if config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                rec = {"step": step + 1, **{k: round(v, 6) for k, v in sums.items()}, "lr": lr,
                       "seconds": round(time.perf_counter() - t0, 3)}
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                history.append(rec)
                bar.update(1)
                bar.set_postfix_str(f"loss={sums['loss']:.4f}, l_aux={sums['l_aux']:.4f}")
                estimate.observe(rec["seconds"])
                if (step + 1) % config.save_every == 0 or step + 1 == total_steps:
                    save_checkpoint(out, step + 1, model, tokenizer, optimizer, config, digest, config.keep_checkpoints)
                    last_saved = step + 1
    finally:
        bar.close()
    if last_saved != total_steps and total_steps > start_step:
        save_checkpoint(out, total_steps, model, tokenizer, optimizer, config, digest, config.keep_checkpoints)
    model.eval()
    model_dir = out / "model"
    with atomic_dir(model_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "blockrank_training.json", {
            "scoring_layer": layer, "block_tokens": config.block_tokens, "steps": total_steps,
            "num_examples": len(examples), "config": config_dict(config),
        })
    return TrainResult(out=out, model_dir=model_dir, steps=total_steps, start_step=start_step,
                       num_examples=len(examples), scoring_layer=layer, history=history,
                       seconds=time.perf_counter() - t_start)
