"""ICR-specific attention fine-tuning (issue 7's last untried lever): teach the query span to attend to
relevant documents in a full-attention ICR prompt.

    python benchmarks/icr_finetune.py --out /tmp/icrft --max-queries 1200 --candidates 10 --max-positives 3 \
        --max-words 100 --lr 1e-5 --minutes 60

Training prompts: NFCorpus train queries (never dev or test), each with up to ``--max-positives`` judged
relevant documents and BM25's top non-relevant ones (`rerank.train_blockrank.build_examples`), in a
random order, framed exactly as ICR frames them (`rerank.prompts.build_icr_prompt`, first-stage order
off: the shuffled order is used). Loss: multi-positive InfoNCE over each document's share of the query
span's attention mass on the documents (mean over the query rows, summed over every head of the chosen
layers): ``-log(sum_pos m_d / sum_all m_d)``, i.e. the scores are ``log m_d`` at temperature ``--tau``.
Only the model's weights change; the ICR reranker reads the saved model with ``--model OUT/model``.

Judge the result on the held-out split first, as every issue-7 lever:

    python benchmarks/icr_heads_collect.py --model OUT/model --name smollm2-135m-icrft --shard K/2 nfcorpus:dev:160
    attnsift analyze heads --model OUT/model --dataset nfcorpus --split dev --max-queries 160 \
        --features ~/.cache/attnsift/heads/smollm2-135m-icrft_nfcorpus-dev-bm2520-w100 --out icrft.json

Writes ``OUT/log.jsonl`` (one line per step), ``OUT/model`` (atomically, at the end or on Ctrl-C) and
``OUT/config.json``.
"""
from __future__ import annotations

import argparse
import contextvars
import json
import logging
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

ATTN_NAME = "attnsift_icr_train"
_ACTIVE: contextvars.ContextVar["dict | None"] = contextvars.ContextVar("attnsift_icr_train", default=None)


def _attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None,
               dropout: float = 0.0, **kwargs: Any) -> tuple[Any, None]:
    """SDPA for the output; at the capture's layers also the query span's attention rows (with grad)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from attnsift.attention_kernels.hf import span_probabilities

    out = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    cap = _ACTIVE.get()
    layer = getattr(module, "layer_idx", None)
    if cap is not None and layer in cap["layers"]:
        qs = cap["query_start"]
        sc = scaling if scaling is not None else query.shape[-1] ** -0.5
        groups = getattr(module, "num_key_value_groups", 1)
        # The span rows are the last rows: causal, bottom-right aligned (attention_mask None).
        probs = span_probabilities(query[:, :, qs:], key, None, sc, groups, kwargs.get("softcap"))  # (1, H, R, K)
        cap["mass"][layer] = probs.mean(dim=2)[0]  # (H, K)
    return out


def register() -> str:
    from attnsift.attention_kernels.hf import register_with_sdpa_masks

    return register_with_sdpa_masks(ATTN_NAME, _attention)


def capturing(cap: dict) -> Any:
    from attnsift.attention_kernels.hf import activate

    return activate(_ACTIVE, cap)


def document_mass(mass: dict, layers: list[int], doc_spans: list[tuple[int, int]]) -> Any:
    """[N] attention mass of the query span on each document: mean over rows, summed over heads and layers."""
    import torch

    m = torch.stack([mass[l] for l in layers]).sum(dim=(0, 1))  # (K,)
    return torch.stack([m[s:e].sum() for s, e in doc_spans])


def forward_mass(model: Any, layout: Any, layers: list[int]) -> Any:
    """One forward pass of an ICR prompt (``rerank.prompts.PromptLayout``); [N] document masses with grad
    (prompt order). The model must use :func:`register`'s attention implementation."""
    import torch

    cap = {"layers": set(layers), "query_start": layout.query_start, "mass": {}}
    device = next(model.parameters()).device
    with capturing(cap):
        model(input_ids=torch.tensor([layout.input_ids], device=device), use_cache=False, logits_to_keep=1)
    missing = set(layers) - set(cap["mass"])
    if missing:
        raise RuntimeError(f"layers {sorted(missing)} were not captured: is the model switched to {ATTN_NAME!r}?")
    return document_mass(cap["mass"], layers, layout.doc_spans)


def icr_loss(doc_mass: Any, positive: Any, tau: float, prior: Any = None) -> Any:
    """Multi-positive InfoNCE over ``log m_d / tau``; with ``prior`` (the N/A query's masses, no grad)
    over ``(log m_d - log prior_d) / tau``, the position prior taken out as ICR's calibration does."""
    from attnsift.train.blockrank import info_nce

    s = doc_mass.clamp_min(1e-12).log()
    if prior is not None:
        s = s - prior.detach().clamp_min(1e-12).log()
    return info_nce(s, positive, tau)


def parse_layers(text: str, num_layers: int) -> list[int]:
    """``"all"`` or comma-separated layer indices (0-based, negative from the end) -> sorted layer list."""
    if text == "all":
        return list(range(num_layers))
    try:
        got = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--layers {text!r}: give 'all' or comma-separated layer numbers, e.g. 12,13,14") from None
    bad = [l for l in got if not -num_layers <= l < num_layers]
    if not got or bad:
        raise SystemExit(f"--layers {text!r}: this model has {num_layers} layers (0..{num_layers - 1}); "
                         f"{'out of range: ' + str(bad) if bad else 'none given'}")
    return sorted({l % num_layers for l in got})


def check_full_attention(config: Any) -> None:
    """The captured rows are computed with plain causal attention over every key: a model with
    sliding-window layers (Gemma 3) would train a quantity its own forward pass never computes."""
    text = getattr(config, "text_config", None) or config
    types = getattr(text, "layer_types", None) or []
    if getattr(text, "sliding_window", None) and (not types or "sliding_attention" in types):
        raise SystemExit("icr_finetune.py supports full-attention models only (SmolLM2, Llama, Mistral, Qwen); "
                         "this model has sliding-window layers")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dataset", default="nfcorpus")
    ap.add_argument("--split", default="train")
    ap.add_argument("--max-queries", type=int, default=1200)
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--max-positives", type=int, default=3)
    ap.add_argument("--max-words", type=int, default=100)
    ap.add_argument("--layers", default="all", help="'all' or comma-separated layer indices whose mass is trained")
    ap.add_argument("--params", default="all", choices=("all", "qk"),
                    help="train every weight, or only the query and key projections of --layers")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--tau", type=float, default=1.0)
    ap.add_argument("--calibrate", action="store_true",
                    help="divide each document's mass by the N/A query's (one more forward pass, no grad)")
    ap.add_argument("--epochs", type=int, default=1, help="passes over the training prompts (each pass reshuffled)")
    ap.add_argument("--warmup-steps", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=60.0, help="stop (and save) after this much training time")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from attnsift.eval.datasets import load_dataset
    from attnsift.io import atomic_dir, atomic_write_json
    from attnsift.rerank.icr import NA_QUERY
    from attnsift.rerank.prompts import build_icr_prompt
    from attnsift.train.blockrank import _load_model, build_examples

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    for name in ("max_queries", "candidates", "max_positives", "max_words", "epochs", "threads"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not (args.lr > 0 and args.tau > 0 and args.minutes > 0):
        raise SystemExit("--lr, --tau and --minutes must be positive")
    out = Path(args.out)
    if (out / "model").exists() or (out / "log.jsonl").exists():
        raise SystemExit(f"{out} already holds a run (model or log.jsonl); choose another --out")
    out.mkdir(parents=True, exist_ok=True)

    ds = load_dataset(args.dataset, split=args.split)
    examples = build_examples(ds, args.candidates, args.max_positives, seed=args.seed,
                              max_queries=args.max_queries, sample="random")
    plan = []
    for e in range(args.epochs):
        order = list(examples)
        random.Random(f"{args.seed}|{e}").shuffle(order)
        plan += order
    model, tok = _load_model(args.model, torch.device("cpu"))
    check_full_attention(model.config)
    model.set_attn_implementation(register())
    model.train()
    layers = parse_layers(args.layers, model.config.num_hidden_layers)
    if args.params == "qk":
        names = tuple(f"layers.{l}.self_attn.{w}." for l in layers for w in ("q_proj", "k_proj"))
        for n, p in model.named_parameters():
            p.requires_grad_(any(x in n for x in names))
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.0)
    config = {k: v for k, v in vars(args).items()}
    config.update(examples=len(examples), machine=f"{platform.machine()} {os.cpu_count()} cores",
                  started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    atomic_write_json(out / "config.json", config)

    t0 = time.time()
    logf = open(out / "log.jsonl", "a", encoding="utf-8")
    step = 0
    try:
        for ex in plan:
            if time.time() - t0 > args.minutes * 60:
                break
            docs = [(d.title, d.text) for d in ex.documents]
            lay = build_icr_prompt(tok, ex.query.text, docs, "ie", args.max_words, None, reverse=False)
            lr = args.lr * min(1.0, (step + 1) / max(1, args.warmup_steps))
            for g in opt.param_groups:
                g["lr"] = lr
            ts = time.time()
            prior = None
            if args.calibrate:
                na = build_icr_prompt(tok, NA_QUERY, docs, "ie", args.max_words, None, reverse=False)
                with torch.no_grad():
                    prior = forward_mass(model, na, layers)
            m = forward_mass(model, lay, layers)  # prompt order = ex order (reverse=False)
            pos = torch.tensor(ex.positive, dtype=torch.bool)
            loss = icr_loss(m, pos, args.tau, prior)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = float(torch.nn.utils.clip_grad_norm_(trained, 1.0))
            opt.step()
            step += 1
            w = m.detach() if prior is None else m.detach() / prior.clamp_min(1e-12)
            share = float(w[pos].sum() / w.sum())
            top_rel = bool(ex.positive[int(w.argmax())])
            rec = {"step": step, "loss": float(loss.detach()), "pos_share": share, "chance": sum(ex.positive) / len(ex.positive),
                   "top_relevant": top_rel, "tokens": lay.num_tokens, "doc_mass": float(m.detach().sum()),
                   "ratio_min": float(w.min()) if prior is not None else None,
                   "ratio_max": float(w.max()) if prior is not None else None, "grad_norm": gn, "lr": lr,
                   "seconds": round(time.time() - ts, 2)}
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            if step % 20 == 0:
                logging.info("step %d loss %.4f pos_share %.3f (chance %.3f) %.1fs/step", step, rec["loss"], share,
                             rec["chance"], (time.time() - t0) / step)
    except KeyboardInterrupt:
        logging.info("interrupted at step %d: saving", step)
    finally:
        logf.close()
    model.eval()
    model.set_attn_implementation("sdpa")
    with atomic_dir(out / "model") as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    config.update(steps=step, trained_minutes=round((time.time() - t0) / 60, 1), finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    atomic_write_json(out / "config.json", config)
    logging.info("saved %s after %d steps", out / "model", step)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
