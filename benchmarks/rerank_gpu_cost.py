"""Reranking cost at a 7B model's shapes with random weights: BlockRank vs ICR, seconds and peak memory.

    # on the lent GPU (the `device` tool), nothing to download or carry:
    python benchmarks/rerank_gpu_cost.py --shape mistral-7b --candidates 20 50 100 500 --icr-max 100
    # the same code at toy shapes on CPU (what CI runs):
    python benchmarks/rerank_gpu_cost.py --shape tiny --device cpu --candidates 4 8 --out /tmp/cost

Quality is not the point here, speed is: the model is a randomly initialised MistralForCausalLM with
Mistral-7B's attention and MLP shapes (32 layers, hidden 4096, 32 query / 8 key-value heads, head dim
128, MLP 14336, full attention as in v0.2+; bfloat16 on a GPU), and the tokenizer is a synthetic word-level one with a Mistral-like
chat template (so no hub files are needed on the offline machine; the vocabulary size, 32000 as in
Mistral, only sizes the embedding). Each candidate is ``--doc-tokens`` random words. BlockRank stops at
the middle layer; ICR runs its full causal prompt and reads every layer. Timings: wall seconds of one
``score`` call after a warm-up, synchronised, median of ``--repeats``; peak memory: CUDA max allocated
(on CPU: the process's peak RSS so far, a weaker number).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

SHAPES = {
    "mistral-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, head_dim=128, max_position_embeddings=32768, rope_theta=1e6, sliding_window=None),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, max_position_embeddings=32768, rope_theta=1e6, sliding_window=None),
}
VOCAB = 32000
TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
            "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")


def synthetic_tokenizer(vocab: int = VOCAB):
    """A fast word-level tokenizer: words ``w0``..``w{n}``, punctuation split off, everything else <unk>."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"]
    words = {t: i for i, t in enumerate(specials)}
    for i in range(vocab - len(specials)):
        words[f"w{i}"] = len(words)
    tk = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tok.add_special_tokens({"additional_special_tokens": ["[INST]", "[/INST]"]})
    tok.chat_template = TEMPLATE
    return tok


def random_model(shape: str, device: str, vocab: int):
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(vocab_size=vocab, **SHAPES[shape])
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = MistralForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def ranking(n: int, doc_tokens: int, seed: int = 0):
    import random

    from attnsift.types import Candidate, Document, Query, Ranking

    rng = random.Random(seed)
    words = lambda k: " ".join(f"w{rng.randrange(VOCAB - 5)}" for _ in range(k))  # noqa: E731
    query = Query("q0", words(12))
    cands = [Candidate(f"d{i}", float(n - i), Document(f"d{i}", words(doc_tokens))) for i in range(n)]
    return Ranking(query, cands)


def peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(rr, r, device: str, repeats: int) -> dict:
    import torch

    def call():
        # A timed repeat must compute, not hit ICR's cache of forward-pass masses (BlockRank has none).
        if hasattr(rr, "mass_cache"):
            rr.mass_cache.clear()
        with torch.no_grad():
            out = rr.score(r)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    call()  # warm-up (kernel compilation, allocator)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        scores = call()
        times.append(time.perf_counter() - t0)
    if not all(s == s for s in scores):  # NaN check: a fast wrong answer is no result
        raise RuntimeError(f"{rr.name}: NaN scores at {len(r)} candidates")
    return {"seconds": statistics.median(times), "seconds_all": times, "peak_mb": peak_memory_mb(device)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="mistral-7b")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available, else the CPU), cpu, cuda or cuda:N [auto]")
    ap.add_argument("--candidates", type=int, nargs="+", default=[20, 50, 100, 500])
    ap.add_argument("--systems", nargs="+", default=["blockrank", "icr"], choices=["blockrank", "icr"])
    ap.add_argument("--icr-max", type=int, default=100, help="largest list ICR is run on (its cost is quadratic)")
    ap.add_argument("--doc-tokens", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    import torch

    from attnsift.io import atomic_write_json, atomic_write_text
    from attnsift.rerank.blockrank import BlockRankReranker
    from attnsift.rerank.icr import ICRReranker

    from attnsift.config import resolve_device

    try:
        dev = resolve_device(args.device)  # a device this machine lacks stops here, in one line
    except ValueError as exc:
        ap.error(str(exc))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # cuda:N: synchronize / memory statistics below read the current device
    device = dev.type
    tok = synthetic_tokenizer()
    t0 = time.perf_counter()
    model = random_model(args.shape, device, len(tok))
    build_s = time.perf_counter() - t0
    rows = []
    for system in args.systems:
        if system == "blockrank":
            rr = BlockRankReranker(model, tokenizer=tok, block_tokens=args.doc_tokens + 24, max_words=args.doc_tokens)
        else:
            rr = ICRReranker(model, tokenizer=tok, max_words=args.doc_tokens, window=max(args.candidates), stride=max(args.candidates) // 2,
                             max_context_tokens=10**6)  # one window: the whole list in one prompt
        for n in args.candidates:
            if system == "icr" and n > args.icr_max:
                continue
            r = ranking(n, args.doc_tokens)
            row = {"system": system, "candidates": n}
            try:
                row.update(measure(rr, r, device, args.repeats))
                if system == "blockrank":
                    row["tokens"] = rr.prompt(r).num_tokens
                    row["scoring_layer"] = rr.scoring_layer
            except Exception as e:  # an OOM at 500 candidates is a result too
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                if device == "cuda":
                    torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    res = {"command": "python benchmarks/rerank_gpu_cost.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "shape": args.shape,
           "model_config": SHAPES[args.shape], "device": torch.cuda.get_device_name() if device == "cuda" else
           f"{platform.machine()} CPU", "torch": torch.__version__, "model_build_s": build_s,
           "doc_tokens": args.doc_tokens, "rows": rows}
    name = f"rerank_cost_{args.shape}_{device}"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"{name}.json", res)
    atomic_write_text(args.out / f"{name}.md", markdown(res))
    print(markdown(res))
    return res


def markdown(res: dict) -> str:
    lines = [f"# Reranking cost, random weights at {res['shape']} shapes, on {res['device']}", "",
             f"- command: `{res['command']}`", f"- date: {res['date']}; torch {res['torch']}",
             f"- model: MistralForCausalLM {res['model_config']}; each candidate {res['doc_tokens']} random words", "",
             "| system | candidates | prompt tokens | s/query (median) | s per candidate | peak memory MB |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['system']} | {r['candidates']} | | error: {r['error'][:80]} | | |")
            continue
        lines.append(f"| {r['system']} | {r['candidates']} | {r.get('tokens', '')} | {r['seconds']:.3f} | "
                     f"{r['seconds'] / r['candidates']:.4f} | {r['peak_mb']:.0f} |")
    by = {(r["system"], r["candidates"]): r for r in res["rows"] if "error" not in r}
    ratios = [f"{n}: {by[('icr', n)]['seconds'] / by[('blockrank', n)]['seconds']:.1f}x"
              for s, n in sorted(by) if s == "icr" and ("blockrank", n) in by]
    if ratios:
        lines += ["", "ICR time / BlockRank time at the same list length: " + ", ".join(ratios)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
