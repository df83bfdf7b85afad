"""Fine-tuning a causal LM for BlockRank (METHODS.md section 2; issue 5, item 4).

Loss per training prompt: ``L = L_lm + lambda * L_aux``.

- ``L_lm``: cross-entropy of the relevant documents' IDs as the model would write them after
  ``Final Answer: [`` (e.g. ``3, 7]``), teacher-forced: the answer tokens are appended to the last
  block, whose attention already sees every block.
- ``L_aux``: multi-positive InfoNCE over the BlockRank document scores at the scoring layer,
  ``-log(sum_rel exp(s/tau) / sum_all exp(s/tau))``. The scores are computed here, differentiably, from
  the scoring layer's post-RoPE queries (last ``query_positions`` prompt tokens) and keys (every token),
  exactly as at inference (:func:`attnsift.attention_kernels.hf_blockrank.document_scores`): logits
  ``q.k * scale`` re-softmaxed over the document tokens only, mean over heads and rows, sum per document.

Training prompts are built by the same function as inference
(:func:`attnsift.rerank.blockrank_prompts.build_blockrank_prompt`, IDs ``0..N-1`` in prompt order, the
last block at the same position offset), and the forward pass runs under the same block-sparse
attention (:func:`attnsift.attention_kernels.hf_blockrank.capturing`), whose PyTorch reference is plain
differentiable torch.

Candidates per query: its relevant documents (qrels grade >= the data set's ``rel_level``; at most
``max_positives``, highest grade first, seeded random within a grade) plus the top BM25 non-relevant
documents up to ``candidates``, shuffled with a seeded RNG. Queries without relevant documents are
skipped. The whole plan (examples and their order over epochs) is a function of the seed, so a resumed
run sees exactly the prompts an uninterrupted one would.

Output folder::

    OUT/train_config.json          the configuration (a resume must match it)
    OUT/loss.jsonl                 {"step", "loss", "l_lm", "l_aux", "lr", "seconds"} per optimizer step
    OUT/checkpoints/step-000050/   model + tokenizer + trainer_state.pt (step, optimizer, RNG states)
    OUT/model/                     the final model + tokenizer: load_causal_lm(OUT/model),
                                   BlockRankReranker(model=OUT/model)

Every folder is written with :func:`attnsift.io.atomic_dir`: a checkpoint either exists complete or
not at all.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from attnsift.config import config_from_options
from attnsift.types import Document, Query

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

    from attnsift.eval.datasets import Dataset

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "train_config.json"
LOSS_FILE = "loss.jsonl"
_ATTN_IMPLS = ("auto", "reference", "flex", "dense")
# Options that may change between a run and its resume (they do not change the result).
_RESUMABLE_CHANGES = ("steps", "save_every", "keep_checkpoints", "progress")


QUERY_SAMPLES = ("random", "first")


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
        by recognising them, not by learning relevance (``benchmarks/results/blockrank_train.md``).
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
    progress: bool = True

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
        if self.attn_impl not in _ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {', '.join(_ATTN_IMPLS)}, got {self.attn_impl!r}")
        if self.block_tokens < 16:
            raise ValueError(f"block_tokens must be >= 16 (the ID frame alone takes ~12 tokens), got {self.block_tokens}")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "TrainConfig":
        return config_from_options(cls, options)


# --------------------------------------------------------------------------------------------------
# Losses and differentiable scores
# --------------------------------------------------------------------------------------------------

def info_nce(scores: "Tensor", positive: "Tensor", tau: float) -> "Tensor":
    """Multi-positive InfoNCE: ``-log(sum_pos exp(s/tau) / sum_all exp(s/tau))``.

    Parameters
    ----------
    scores : Tensor
        [N] document scores.
    positive : Tensor
        [N] bool, True for relevant documents (at least one).
    tau : float
        Temperature.

    Returns
    -------
    Tensor
        Scalar float32 (log-sum-exp form, stable for small tau).
    """
    import torch

    if scores.dim() != 1 or positive.shape != scores.shape:
        raise ValueError(f"info_nce: scores and positive must both be [N], got {tuple(scores.shape)} and {tuple(positive.shape)}")
    positive = positive.to(device=scores.device, dtype=torch.bool)
    if not bool(positive.any()):
        raise ValueError("info_nce needs at least one positive document")
    z = scores.float() / float(tau)
    return torch.logsumexp(z, dim=0) - torch.logsumexp(z[positive], dim=0)


def differentiable_document_scores(q: "Tensor", k: "Tensor", block_offsets: Sequence[int] | "Tensor",
                                   scale: float) -> "Tensor":
    """BlockRank scores from the scoring layer's queries and keys, keeping the autograd graph.

    Same definition as :func:`attnsift.attention_kernels.hf_blockrank.document_scores` (which runs
    the forward-only segment-mass kernel): the scoring rows' logits against the document tokens,
    softmaxed over those tokens, averaged over heads and rows, summed per document.

    Parameters
    ----------
    q : Tensor
        [P, Hq, D] post-RoPE queries of the scoring rows.
    k : Tensor
        [T, Hk, D] post-RoPE keys of every token, ``Hq % Hk == 0`` (head h reads key head h // (Hq/Hk)).
    block_offsets : sequence of int or Tensor
        [B+1] block offsets; blocks 1..B-2 are the documents (contiguous).
    scale : float
        Logit scale of the layer.

    Returns
    -------
    Tensor
        [B-2] float32 scores in prompt (block) order; they sum to 1.
    """
    import torch

    off = [int(x) for x in (block_offsets.tolist() if hasattr(block_offsets, "tolist") else block_offsets)]
    d0, d1 = off[1], off[-2]
    P, Hq, D = q.shape
    Hk = k.shape[1]
    G = Hq // Hk
    kd = k[d0:d1].float()  # [Td, Hk, D]
    qf = q.float().reshape(P, Hk, G, D)
    logits = torch.einsum("phgd,thd->phgt", qf, kd) * scale  # [P, Hk, G, Td]
    probs = torch.softmax(logits, dim=-1).mean(dim=(0, 1, 2))  # [Td]
    lengths = [off[b + 1] - off[b] for b in range(1, len(off) - 2)]
    seg = torch.repeat_interleave(torch.arange(len(lengths), device=probs.device),
                                  torch.tensor(lengths, device=probs.device))
    return torch.zeros(len(lengths), device=probs.device, dtype=probs.dtype).index_add(0, seg, probs)


# --------------------------------------------------------------------------------------------------
# Training data
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainExample:
    """One training prompt: a query and its candidates in prompt order.

    Attributes
    ----------
    query : Query
    documents : tuple of Document
        In prompt order; the ID written for ``documents[i]`` is ``i``.
    grades : tuple of int
        Qrels grade of each document (0 for BM25 negatives).
    positive : tuple of bool
        Relevant (grade >= rel_level) documents.
    """

    query: Query
    documents: tuple[Document, ...]
    grades: tuple[int, ...]
    positive: tuple[bool, ...]

    def answer_ids(self) -> list[int]:
        """IDs the model should write: the relevant documents, highest grade first, then by ID."""
        return sorted((i for i, p in enumerate(self.positive) if p), key=lambda i: (-self.grades[i], i))

    def answer_text(self) -> str:
        """The completion after ``Final Answer: [``, e.g. ``"3, 7]"``."""
        return ", ".join(str(i) for i in self.answer_ids()) + "]"


def build_examples(dataset: "Dataset", candidates: int, max_positives: int, seed: int = 0,
                   max_queries: int | None = None, bm25_depth: int = 100,
                   progress: bool = False, sample: str = "random") -> list[TrainExample]:
    """Sample the training prompts of ``dataset`` (relevant documents + BM25 negatives, shuffled).

    Parameters
    ----------
    dataset : Dataset
        Its ``queries``, ``qrels``, ``corpus`` and ``rel_level`` are used.
    candidates : int
        Documents per prompt.
    max_positives : int
        Relevant documents per prompt, at most (highest grade first; seeded random within a grade).
    seed : int
    max_queries : int, optional
        Keep N usable queries: a sample seeded by ``seed`` (``sample="random"``, kept in file order) or
        the first N (``sample="first"``).
    bm25_depth : int
        BM25 is asked for ``candidates + bm25_depth`` documents; negatives are its top non-relevant ones.

    Returns
    -------
    list of TrainExample, in query file order.

    Raises
    ------
    ValueError
        No query has a relevant document that is in the corpus.
    """
    from attnsift.retrieval.bm25 import BM25Retriever

    if sample not in QUERY_SAMPLES:
        raise ValueError(f"sample must be one of {', '.join(QUERY_SAMPLES)}, got {sample!r}")
    corpus = dataset.corpus
    rel = dataset.rel_level
    usable: list[Query] = []
    for qid, query in dataset.queries.items():
        judged = dataset.qrels.get(qid, {})
        if any(g >= rel and d in corpus for d, g in judged.items()):
            usable.append(query)
        if sample == "first" and max_queries is not None and len(usable) >= max_queries:
            break
    if sample == "random" and max_queries is not None and len(usable) > max_queries:
        keep = set(random.Random(f"{seed}|queries").sample(range(len(usable)), max_queries))
        usable = [q for i, q in enumerate(usable) if i in keep]
    if not usable:
        raise ValueError(
            f"data set {dataset.name!r} (split {dataset.split!r}) has no query with a relevant document "
            f"(qrels grade >= {rel}) in its corpus; BlockRank training needs judged relevant documents: "
            "choose a split with qrels such as nfcorpus/train"
        )
    bm25 = BM25Retriever.from_corpus(corpus.iter_documents())
    depth = min(bm25.num_docs, candidates + bm25_depth)
    run = bm25.retrieve_batch(usable, k=depth, progress=progress)
    examples = []
    for query in usable:
        rng = random.Random(f"{seed}|{query.id}")  # per-query stream: a query's prompt does not depend on the others
        judged = dataset.qrels.get(query.id, {})
        rel_docs = sorted((d for d, g in judged.items() if g >= rel and d in corpus))
        rng.shuffle(rel_docs)
        rel_docs.sort(key=lambda d: -judged[d])  # stable: random order within a grade
        pos = rel_docs[:min(max_positives, candidates - 1)]  # room for at least one negative
        neg = [c.doc_id for c in run[query.id].candidates if judged.get(c.doc_id, 0) < rel][: candidates - len(pos)]
        if not neg:
            log.warning("query %s: BM25 found no non-relevant document; skipped", query.id)
            continue
        chosen = [(d, judged[d], True) for d in pos] + [(d, int(judged.get(d, 0)), False) for d in neg]
        rng.shuffle(chosen)
        examples.append(TrainExample(
            query=query,
            documents=tuple(corpus[d] for d, _, _ in chosen),
            grades=tuple(int(g) for _, g, _ in chosen),
            positive=tuple(p for _, _, p in chosen),
        ))
    if not examples:
        raise ValueError(f"no training prompt could be built from {dataset.name!r} (no BM25 negatives found)")
    return examples


def examples_digest(examples: Sequence[TrainExample]) -> str:
    """A short hash of the training plan (queries, documents, labels), checked on resume."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(ex.query.id.encode())
        for d, g, p in zip(ex.documents, ex.grades, ex.positive):
            h.update(f"|{d.id}:{g}:{int(p)}".encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class EncodedExample:
    """A tokenized training prompt with its answer appended.

    Attributes
    ----------
    input_ids, position_ids : list of int
        [T] prompt + answer tokens (the answer continues the last block's positions).
    block_offsets : list of int
        [B+1] prompt blocks, the answer counted in the last block.
    prompt_tokens : int
        Tp: the prompt's length; the answer is tokens Tp..T-1.
    query_rows : list of int
        The scoring rows (the last ``query_positions`` prompt tokens).
    positive : list of bool
        [B-2] per document block (prompt order).
    """

    input_ids: list[int]
    position_ids: list[int]
    block_offsets: list[int]
    prompt_tokens: int
    query_rows: list[int]
    positive: list[bool]

    @property
    def answer_tokens(self) -> int:
        return len(self.input_ids) - self.prompt_tokens


def encode_example(example: TrainExample, tokenizer: Any, *, block_tokens: int, max_words: int,
                   final_offset: int, max_positions: int | None, query_positions: int = 2) -> EncodedExample:
    """Build the BlockRank prompt of ``example`` (as inference does) and append the answer tokens.

    The prompt's positions are exactly those of inference (same builder, same clamp); the answer tokens
    follow the last block and may run a few positions past ``max_positions`` (RoPE has no table).
    """
    from attnsift.rerank.blockrank_prompts import build_blockrank_prompt

    prompt = build_blockrank_prompt(
        tokenizer, example.query.text, [(d.title, d.text) for d in example.documents],
        block_tokens=block_tokens, max_words=max_words, final_offset=final_offset, max_positions=max_positions,
    )
    answer = list(tokenizer(example.answer_text(), add_special_tokens=False)["input_ids"])
    Tp = prompt.num_tokens
    last_pos = prompt.position_ids[-1]
    P = min(query_positions, prompt.block_offsets[-1] - prompt.block_offsets[-2])
    return EncodedExample(
        input_ids=prompt.input_ids + answer,
        position_ids=prompt.position_ids + list(range(last_pos + 1, last_pos + 1 + len(answer))),
        block_offsets=prompt.block_offsets[:-1] + [Tp + len(answer)],
        prompt_tokens=Tp,
        query_rows=list(range(Tp - P, Tp)),
        positive=list(example.positive),
    )


# --------------------------------------------------------------------------------------------------
# Forward / backward of one prompt
# --------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _active_capture(capture: Any) -> Iterator[None]:
    from attnsift.attention_kernels import hf_blockrank

    token = hf_blockrank._ACTIVE.set(capture)
    try:
        yield
    finally:
        hf_blockrank._ACTIVE.reset(token)


def _checkpoint_context_fn() -> tuple[Any, Any]:
    """``context_fn`` of torch's non-reentrant checkpoint: the recompute of a layer in the backward pass
    runs under the BlockRank capture that was active in its forward pass.

    Without it the recompute would find no active capture (it may run on autograd's device thread,
    which does not share our context variables) and fall back to plain SDPA: silently wrong gradients.
    The recompute writes into a throwaway copy, so the capture read by the loss is left alone.
    """
    from attnsift.attention_kernels import hf_blockrank

    cap = hf_blockrank._ACTIVE.get()
    replay = dataclasses.replace(cap) if cap is not None else None
    return contextlib.nullcontext(), _active_capture(replay)


def enable_gradient_checkpointing(model: Any) -> None:
    """Checkpoint every decoder layer (non-reentrant, BlockRank-aware recompute)."""
    kwargs = {"use_reentrant": False, "context_fn": _checkpoint_context_fn}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers < 5
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _resolve_attn_impl(impl: str, device: Any) -> str:
    # "auto" is the blockwise PyTorch reference on every device: it is differentiable and its memory is
    # linear in the number of documents. FlexAttention (compiled on CUDA, one compile per sequence
    # length) stays an explicit choice until its backward is checked on a GPU.
    return "reference" if impl == "auto" else impl


def example_losses(model: Any, enc: EncodedExample, *, scoring_layer: int, lambda_aux: float, tau: float,
                   attn_impl: str = "reference", backward_scale: float | None = None,
                   autocast_dtype: Any = None) -> dict[str, Any]:
    """Forward one prompt under the BlockRank mask; the losses; optionally their backward pass.

    Parameters
    ----------
    model : a transformers causal LM (one prompt, batch size 1)
    enc : EncodedExample
    scoring_layer : int
    lambda_aux, tau : float
    attn_impl : str
        A differentiable ``block_sparse_attention`` impl (``reference``, ``flex``, ``dense``).
    backward_scale : float, optional
        When given, ``(loss * backward_scale).backward()`` runs here, inside the capture (gradient
        checkpointing recomputes layers during it, under the same mask).
    autocast_dtype : torch.dtype, optional
        Run the forward under autocast (bfloat16 on CUDA).

    Returns
    -------
    dict
        ``loss``, ``l_lm``, ``l_aux`` (scalar tensors; detached after a backward) and ``scores`` ([N]
        document scores, prompt order, detached).
    """
    import torch
    import torch.nn.functional as F

    from attnsift.attention_kernels.hf_blockrank import BlockRankCapture, capturing

    device = next(model.parameters()).device
    cap = BlockRankCapture(
        block_offsets=torch.tensor(enc.block_offsets, dtype=torch.int64),
        scoring_layer=int(scoring_layer),
        query_rows=torch.tensor(enc.query_rows, dtype=torch.int64),
        early_exit=False,
        impl=attn_impl,
    )
    ids = torch.tensor(enc.input_ids, dtype=torch.int64, device=device)[None]
    pos = torch.tensor(enc.position_ids, dtype=torch.int64, device=device)[None]
    A = enc.answer_tokens
    targets = ids[0, enc.prompt_tokens:]  # [A]
    amp = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    with capturing(model, cap):
        with amp:
            # logits only where the answer is predicted: the last prompt token .. the second-to-last token
            out = model(input_ids=ids, position_ids=pos, use_cache=False, logits_to_keep=A + 1)
        if cap.q is None:
            raise RuntimeError(f"scoring layer {scoring_layer} was not reached by the forward pass")
        logits = out.logits[0, :A].float()  # [A, V]
        l_lm = F.cross_entropy(logits, targets)
        scores = differentiable_document_scores(cap.q, cap.k, enc.block_offsets, cap.scaling)  # [N]
        positive = torch.tensor(enc.positive, dtype=torch.bool, device=scores.device)
        l_aux = info_nce(scores, positive, tau)
        loss = l_lm + float(lambda_aux) * l_aux
        if backward_scale is not None:
            (loss * float(backward_scale)).backward()
            loss, l_lm, l_aux = loss.detach(), l_lm.detach(), l_aux.detach()
    return {"loss": loss, "l_lm": l_lm, "l_aux": l_aux, "scores": scores.detach()}


# --------------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------------

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


def _checkpoints(out: Path) -> list[Path]:
    root = out / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _config_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _check_resume_config(saved: dict[str, Any], cfg: TrainConfig, out: Path) -> None:
    now = _config_dict(cfg)
    saved = {"query_sample": "first", **saved}  # runs saved before the option took the first N queries
    diff = sorted(k for k in set(saved) | set(now) if k not in _RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if diff:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
        raise ValueError(
            f"--resume: the options differ from the run in {out} ({details}); resume with the same options "
            f"(only {', '.join(_RESUMABLE_CHANGES)} may change) or start a new run with --overwrite"
        )


def _load_model(name_or_dir: str, device: Any) -> tuple[Any, Any]:
    """A fresh float32 copy (never the in-process cache of ``load_causal_lm``: training mutates it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from attnsift.rerank.llm import resolve_model_path

    path = resolve_model_path(name_or_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.to(device)
    return model, tokenizer


def _rng_state() -> dict[str, Any]:
    import torch

    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(out: Path, step: int, model: Any, tokenizer: Any, optimizer: Any, cfg: TrainConfig,
                     digest: str) -> Path:
    import torch

    from attnsift.io import atomic_dir

    path = out / "checkpoints" / f"step-{step:06d}"
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "rng": _rng_state(),
                    "config": _config_dict(cfg), "examples_digest": digest}, tmp / STATE_FILE)
    for old in _checkpoints(out)[:-cfg.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _rewrite_log(path: Path, upto_step: int) -> None:
    """Keep the loss log lines of steps <= ``upto_step`` (a resume redoes the later ones); a torn last
    line is dropped."""
    from attnsift.io import atomic_write_text

    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= upto_step:
            keep.append(line)
    atomic_write_text(path, "".join(f"{x}\n" for x in keep))


def prepare_out(out: str | Path, resume: bool, overwrite: bool, clear: bool = True) -> Path:
    """Check (and with ``overwrite`` and ``clear``, empty) the output folder.

    Raises
    ------
    FileExistsError
        ``out`` exists and neither ``resume`` nor ``overwrite`` is set.
    ValueError
        Both flags; ``out`` is a file; ``overwrite`` on a non-empty folder that is not a training run.
    """
    out = Path(out).expanduser()
    if resume and overwrite:
        raise ValueError("give either --resume (continue the run in --out) or --overwrite (start it again), not both")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the training run")
    if out.exists() and not resume:
        if not overwrite:
            raise FileExistsError(
                f"{out} exists; pass --resume to continue the training run there, or --overwrite to start again"
            )
        if any(out.iterdir()) and not (out / CONFIG_FILE).is_file():
            raise ValueError(
                f"--overwrite refuses to delete {out}: it is not empty and has no {CONFIG_FILE}, so it is not a "
                "BlockRank training run; choose another --out"
            )
        if clear:
            shutil.rmtree(out)
    return out


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
        _check_resume_config(json.loads((out / CONFIG_FILE).read_text(encoding="utf-8")), config, out)

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
    ckpts = _checkpoints(out) if resume else []
    if (out / "checkpoints").is_dir():  # temp folders of checkpoints that a killed run never finished
        for junk in (out / "checkpoints").iterdir():
            if junk.is_dir() and junk.name.startswith(".") and (junk.name.endswith(".tmp") or ".old-" in junk.name):
                shutil.rmtree(junk, ignore_errors=True)

    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    start_step = 0
    state = None
    if ckpts:
        state = torch.load(ckpts[-1] / STATE_FILE, map_location="cpu", weights_only=True)
        if state.get("examples_digest") != digest:
            raise ValueError(
                f"--resume: the training prompts differ from those of the checkpoint {ckpts[-1]} (data set or "
                "corpus changed?); start a new run with --overwrite"
            )
        start_step = int(state["step"])
        model, tokenizer = _load_model(str(ckpts[-1]), device)
        log.info("resuming from %s (step %d)", ckpts[-1], start_step)
    else:
        torch.manual_seed(config.seed)
        model, tokenizer = _load_model(config.model, device)

    tcfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    num_layers = int(tcfg.num_hidden_layers)
    layer = num_layers // 2 if config.scoring_layer is None else config.scoring_layer
    if not 0 <= layer < num_layers:
        raise ValueError(f"scoring_layer={layer} is out of range: the model has {num_layers} layers (0..{num_layers - 1})")
    max_positions = getattr(tcfg, "max_position_embeddings", None)

    per_step = config.batch_size * config.grad_accum
    total_steps = config.steps if config.steps is not None else math.ceil(len(examples) / per_step)
    if total_steps < start_step:
        raise ValueError(
            f"--steps {total_steps} is below the step of the checkpoint to resume ({start_step}, in {ckpts[-1]}); "
            f"give --steps >= {start_step}"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CONFIG_FILE, _config_dict(config))
    log_path = out / LOSS_FILE
    if resume:
        _rewrite_log(log_path, start_step)
    elif log_path.exists():
        log_path.unlink()

    model.train()
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
    attn_impl = _resolve_attn_impl(config.attn_impl, device)
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None
    plan = _plan(len(examples), total_steps * per_step, config.seed)
    enc_kw = dict(block_tokens=config.block_tokens, max_words=config.max_words, final_offset=config.final_offset,
                  max_positions=max_positions, query_positions=config.query_positions)

    history: list[dict] = []
    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=start_step, desc="blockrank train", unit="step", dynamic_ncols=True)
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
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{sums['loss']:.4f}", l_aux=f"{sums['l_aux']:.4f}")
                if (step + 1) % config.save_every == 0 or step + 1 == total_steps:
                    _save_checkpoint(out, step + 1, model, tokenizer, optimizer, config, digest)
                    last_saved = step + 1
    finally:
        if bar is not None:
            bar.close()
    if last_saved != total_steps and total_steps > start_step:
        _save_checkpoint(out, total_steps, model, tokenizer, optimizer, config, digest)
    model.eval()
    model_dir = out / "model"
    with atomic_dir(model_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "blockrank_training.json", {
            "scoring_layer": layer, "block_tokens": config.block_tokens, "steps": total_steps,
            "num_examples": len(examples), "config": _config_dict(config),
        })
    return TrainResult(out=out, model_dir=model_dir, steps=total_steps, start_step=start_step,
                       num_examples=len(examples), scoring_layer=layer, history=history,
                       seconds=time.perf_counter() - t_start)
