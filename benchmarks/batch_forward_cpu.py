"""Does one batched forward over several queries' prompts beat one forward per prompt on this CPU?

    python benchmarks/batch_forward_cpu.py --tokens 300 600 1200 --batch 1 2 4 8 --repeats 3

The question behind issue 21's "several queries' short lists batched into one forward where that is faster":
ICR's cost is one forward over each list's prompt (benchmarks/results/icr_cpu_ratio.md), so batching can only
win if a batched forward of B prompts costs less than B forwards of one. This times exactly that with
SmolLM2-135M in float32 (SDPA, ``use_cache=False``, last-token logits only, random token ids of equal length,
so no padding is counted against batching): per prompt, B sequential forwards against one [B, T] forward,
interleaved, minimum of ``--repeats``. Prints a table (``--json`` writes the rows).
"""
from __future__ import annotations

import argparse
import json
import os
import time


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[300, 600, 1200])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch

    from attnsift.rerank.llm import load_causal_lm

    model, _ = load_causal_lm(args.model, device="cpu", dtype=torch.float32)
    model.eval()
    model.set_attn_implementation("sdpa")
    g = torch.Generator().manual_seed(0)
    rows = []
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}", flush=True)
    for T in args.tokens:
        for B in args.batch:
            ids = torch.randint(100, 40000, (B, T), generator=g)

            def one_by_one() -> None:
                for b in range(B):
                    model(input_ids=ids[b:b + 1], use_cache=False, logits_to_keep=1)

            def batched() -> None:
                model(input_ids=ids, use_cache=False, logits_to_keep=1)

            with torch.inference_mode():
                batched()  # warm-up
                seq, bat = float("inf"), float("inf")
                for _ in range(args.repeats):
                    t = time.perf_counter(); one_by_one(); seq = min(seq, time.perf_counter() - t)
                    t = time.perf_counter(); batched(); bat = min(bat, time.perf_counter() - t)
            row = {"tokens": T, "batch": B, "sequential_s_per_prompt": round(seq / B, 4),
                   "batched_s_per_prompt": round(bat / B, 4), "speedup": round(seq / bat, 3),
                   "load": round(os.getloadavg()[0], 1)}
            rows.append(row)
            print(row, flush=True)
    print("\n| tokens | batch | sequential s/prompt | batched s/prompt | batched speed-up |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tokens']} | {r['batch']} | {r['sequential_s_per_prompt']:.3f} | {r['batched_s_per_prompt']:.3f} "
              f"| {r['speedup']:.2f}x |")
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(rows, f, indent=1)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
