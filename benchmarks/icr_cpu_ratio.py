"""ICR's CPU cost against one plain forward pass over a prompt of the same length.

    ATTNSIFT_DATA=/work/shared/data python benchmarks/icr_cpu_ratio.py --queries 5 --max-words 300 100

For the first ``--queries`` DL19 queries of the provided BM25 run (``bm25_flat``), top ``--candidates``
(20) passages, documents cut at each ``--max-words``: (a) ICR's full scoring of the list
(``ICRReranker.score_details``, wall seconds around the call: prompt building, the prefix pass, the
query and N/A span passes, the mass reduction), (b) one plain SDPA forward of the very same token ids
(``model(input_ids, use_cache=False, logits_to_keep=1)``: logits of the last token only). Each is
timed ``--repeats`` times, interleaved with the other (the minimum is kept: the CPU may be shared), after
one warm-up. Prints a
Markdown table (and ``--json`` writes the rows).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time


def _min_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--max-words", type=int, nargs="+", default=[300, 100])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--json", default=None, help="write the rows to this file")
    args = ap.parse_args(argv)
    if args.queries < 1 or args.candidates < 1 or args.repeats < 1:
        raise SystemExit("--queries, --candidates and --repeats must be positive")

    import torch
    import transformers

    from attnsift.eval.datasets import load_dataset
    from attnsift.pipeline import attach_texts
    from attnsift.rerank.icr import ICRConfig, ICRReranker, MassCache
    from attnsift.rerank.llm import load_causal_lm

    ds = load_dataset("dl19")
    run = ds.load_run("bm25")
    qids = list(run)[: args.queries]
    run = attach_texts(run.top(args.candidates), ds.corpus, progress=False)
    model, tok = load_causal_lm(args.model, device="cpu", dtype=torch.float32)
    model.eval()
    print(f"# torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}", flush=True)
    rows = []
    for mw in args.max_words:
        rr = ICRReranker(model, tokenizer=tok, config=ICRConfig(max_words=mw))
        warm = True
        for qid in qids:
            rk = run[qid].top(args.candidates)
            docs = [(c.document.title, c.document.text) for c in rk.candidates]
            layout, _ = rr._fit_one_prompt(rk.query.text, docs)
            ids = torch.tensor([layout.input_ids])

            def icr() -> None:
                rr.mass_cache = MassCache()  # no cache hits between repeats
                rr.score_details(rk)

            def plain() -> None:
                prev = model.config._attn_implementation
                model.set_attn_implementation("sdpa")
                try:
                    with torch.inference_mode():
                        model(input_ids=ids, use_cache=False, logits_to_keep=1)
                finally:
                    model.set_attn_implementation(prev)

            if warm:
                icr(), plain()
                warm = False
            # Interleaved (ICR, plain, ICR, plain, ...): load from other processes hits both alike.
            a, b = float("inf"), float("inf")
            for _ in range(args.repeats):
                a = min(a, _min_time(icr, 1))
                b = min(b, _min_time(plain, 1))
            row = {"max_words": mw, "query": qid, "tokens": layout.num_tokens, "icr_s": round(a, 3),
                   "plain_s": round(b, 3), "ratio": round(a / b, 3)}
            rows.append(row)
            print(row, flush=True)
    print("\n| max_words | query | tokens | ICR s | plain forward s | ratio |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['max_words']} | {r['query']} | {r['tokens']} | {r['icr_s']:.3f} | {r['plain_s']:.3f} | {r['ratio']:.2f} |")
    for mw in args.max_words:
        med = statistics.median(r["ratio"] for r in rows if r["max_words"] == mw)
        print(f"| {mw} | **median** | | | | **{med:.2f}** |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
