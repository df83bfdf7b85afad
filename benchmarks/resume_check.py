"""Compare an interrupted-then-resumed `bench quality` output folder with an uninterrupted one, query by query.

    python benchmarks/resume_check.py RESUMED_DIR UNINTERRUPTED_DIR
"""
import json, sys
from pathlib import Path
a, b = Path(sys.argv[1]), Path(sys.argv[2])  # resumed (10 q), uninterrupted (30 q)
rows, same, total = [], True, 0
for ds in ("scifact", "nfcorpus", "dl19"):
    for sysdir in sorted(p.name for p in (a / ds).iterdir() if p.is_dir()):
        ra = json.loads((a / ds / sysdir / "metrics.json").read_text())["report"]["per_query"]
        rb = json.loads((b / ds / sysdir / "metrics.json").read_text())["report"]["per_query"]
        diffs = [abs(ra[q]["nDCG@10"] - rb[q]["nDCG@10"]) for q in ra]
        total += len(diffs)
        same &= max(diffs) == 0.0
        rows.append(f"| {ds} | {sysdir} | {len(diffs)} | {max(diffs):.1e} |")
print("\n".join(rows)); print("identical:", same, "queries compared:", total)
