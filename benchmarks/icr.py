"""ICR cost: attnsift's ICR (prefix KV cache + query-span rows) against the eager two-pass reference.

    ATTNSIFT_DATA=/work/shared/data python benchmarks/icr.py cost --candidates 20 100 --max-words 100

Every (number of candidates, implementation) runs in a fresh subprocess on the first N passages of the
DL19 corpus (``attnsift.eval.datasets.load_dataset("dl19")``, file order): the wall seconds of one
``score_details`` call and the child's peak RSS (``resource.getrusage``). The reference is eager attention
with ``output_attentions=True``, two full passes (real and N/A query); it is skipped above
``--max-eager-candidates``. Writes ``benchmarks/results/icr_cost.json`` (rows with the scores, so the two
implementations can be compared); ``icr_cost.md`` is the write-up of that file.

Quality tables are ``attnsift bench quality`` (see benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _child(cfg: dict) -> dict:
    """One cost configuration, run in this (fresh) process; returns seconds and peak RSS."""
    import resource

    from attnsift.eval.datasets import load_dataset
    from attnsift.rerank.icr import ICRConfig, ICRReranker, reference_scores
    from attnsift.rerank.llm import load_causal_lm
    from attnsift.types import Candidate, Document, Query, Ranking

    model, tok = load_causal_lm(cfg["model"])
    # The first N passages of the DL19 corpus in file order, without titles (DL19 passages have none).
    docs = list(itertools.islice(load_dataset("dl19").corpus.iter_documents(), cfg["n"]))
    r = Ranking(Query("q", "what is the role of attention in ranking"),
                tuple(Candidate(d.id, float(cfg["n"] - i), Document(d.id, d.text)) for i, d in enumerate(docs)))
    conf = ICRConfig(max_words=cfg["max_words"])
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    if cfg["impl"] == "attnsift":
        det = ICRReranker(model, tokenizer=tok, config=conf).score_details(r)
    else:
        det = reference_scores(model, tok, r, conf)
    sec = time.perf_counter() - t
    return {"seconds": round(sec, 2), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_after_load_mb": round(base_rss, 1), "tokens": det.num_tokens, "scores": det.scores}


def cost(args) -> None:
    rows = []
    for n in args.candidates:
        for impl in ("attnsift", "eager_two_pass"):
            if impl == "eager_two_pass" and n > args.max_eager_candidates:
                rows.append({"n": n, "impl": impl, "skipped": f"more than {args.max_eager_candidates} candidates"})
                continue
            cfg = {"model": args.model, "n": n, "impl": impl, "max_words": args.max_words}
            p = subprocess.run([sys.executable, __file__, "_child", json.dumps(cfg)], capture_output=True, text=True)
            if p.returncode != 0:
                rows.append({"n": n, "impl": impl, "error": p.stderr[-800:]})
            else:
                rows.append({"n": n, "impl": impl, **json.loads(p.stdout.strip().splitlines()[-1])})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "scores"}), file=sys.stderr, flush=True)
    out = {"command": " ".join(sys.argv), "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": f"{platform.machine()} {os.cpu_count()} cores (shared with other jobs), no GPU",
           "model": args.model, "max_words": args.max_words, "rows": rows}
    from attnsift.io import atomic_write_json

    atomic_write_json(RESULTS / "icr_cost.json", out)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_child":
        print(json.dumps(_child(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cost", help="seconds and peak RSS, attnsift ICR against the eager two-pass reference")
    c.add_argument("--model", default="smollm2-135m")
    c.add_argument("--candidates", type=int, nargs="+", default=[20, 100])
    c.add_argument("--max-words", type=int, default=40)
    c.add_argument("--max-eager-candidates", type=int, default=20)
    cost(ap.parse_args())


if __name__ == "__main__":
    main()
