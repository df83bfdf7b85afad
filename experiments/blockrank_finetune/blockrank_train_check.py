"""Does BlockRank fine-tuning learn relevance or memorise documents? Two checks (issue 5).

    # attention ranking on TRAINING-STYLE prompts of held-out queries (forward only, ~1.5 s per prompt)
    python benchmarks/blockrank_train_check.py prompts --model smollm2-135m --split dev --queries 60
    python benchmarks/blockrank_train_check.py prompts --model runs/br/model --split dev --queries 60
    # how much the training queries share relevant documents (NFCorpus clusters its queries)
    python benchmarks/blockrank_train_check.py overlap --queries 200

``prompts`` builds the prompts exactly as training does (``build_examples``: up to 5 relevant documents
plus BM25 negatives, 10 candidates, shuffled; block H = 96, 150 words) and reports L_aux, the MRR of the
first relevant document under the layer's attention scores, and how often the top-scored one is relevant.
"""
from __future__ import annotations

import argparse
import random

import numpy as np


def prompts(args: argparse.Namespace) -> None:
    import torch

    from attnsift.eval.datasets import load_dataset
    from attnsift.rerank.llm import load_causal_lm
    from attnsift.train.blockrank import build_examples, encode_example, example_losses

    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset, split=args.split)
    examples = build_examples(ds, args.candidates, 5, seed=0, max_queries=args.queries, sample="first")
    model, tok = load_causal_lm(args.model, device="cpu")
    layer = args.layer if args.layer is not None else model.config.num_hidden_layers // 2
    top1, mrr, laux = [], [], []
    for ex in examples:
        enc = encode_example(ex, tok, block_tokens=96, max_words=150, final_offset=16384, max_positions=8192)
        with torch.no_grad():
            out = example_losses(model, enc, scoring_layer=layer, lambda_aux=0.1, tau=0.05)
        order = np.argsort(-out["scores"].numpy())
        pos = np.array(enc.positive)
        top1.append(bool(pos[order[0]]))
        mrr.append(1.0 / (1 + next(i for i, d in enumerate(order) if pos[d])))
        laux.append(float(out["l_aux"]))
    chance = float(np.mean([np.mean(ex.positive) for ex in examples]))
    print(f"{args.model}: {len(examples)} {args.dataset} {args.split} prompts, layer {layer}: L_aux {np.mean(laux):.3f}, "
          f"MRR {np.mean(mrr):.3f}, top-1 relevant {np.mean(top1):.0%} (chance {chance:.0%})")


def overlap(args: argparse.Namespace) -> None:
    from attnsift.eval.datasets import load_dataset

    ds = load_dataset(args.dataset, split="train")
    qs = [q for q in ds.queries if any(g >= ds.rel_level for g in ds.qrels.get(q, {}).values())]

    def rel(q: str) -> set:
        return {d for d, g in ds.qrels[q].items() if g >= ds.rel_level}

    def shared(sel: list[str], window: int | None = None) -> float:
        hits = 0
        for i, q in enumerate(sel):
            earlier = sel[:i] if window is None else sel[max(0, i - window):i]
            hits += any(rel(q) & rel(e) for e in earlier)
        return hits / len(sel)

    n = args.queries
    sample = random.Random(0).sample(qs, n)
    print(f"{args.dataset} train: {len(qs)} queries with relevant documents, "
          f"{np.mean([len(rel(q)) for q in qs]):.1f} relevant documents per query")
    for label, sel in ((f"first {n}", qs[:n]), (f"seeded random {n}", sample)):
        covered = len(set().union(*(rel(q) for q in sel)))
        print(f"{label}: {shared(sel):.0%} share a relevant document with an earlier query, "
              f"{shared(sel, 5):.0%} with one of the 5 before; together relevant documents cover "
              f"{covered} of the corpus's {len(ds.corpus)} documents")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prompts")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dataset", default="nfcorpus")
    p.add_argument("--split", default="dev")
    p.add_argument("--queries", type=int, default=60)
    p.add_argument("--candidates", type=int, default=10)
    p.add_argument("--layer", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    o = sub.add_parser("overlap")
    o.add_argument("--dataset", default="nfcorpus")
    o.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    prompts(args) if args.cmd == "prompts" else overlap(args)


if __name__ == "__main__":
    main()
