"""Compare an interrupted-then-resumed `attnsift bench quality` folder with an uninterrupted one.

    python benchmarks/resume_check.py RESUMED_DIR UNINTERRUPTED_DIR [--metric nDCG@10]

Both folders are `attnsift bench quality --out` folders (their ``results.json`` names each result folder). For
every data set and system of RESUMED_DIR, every query it scored is compared with the same query in
UNINTERRUPTED_DIR (which may hold more queries: a longer run of the same systems). Prints a Markdown
table (data set, system, queries, largest absolute difference) and whether every figure is identical;
exits 1 when one differs. How it was used: ``benchmarks/results/bench_resume.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _rows(out: Path) -> dict[tuple[str, str], Path]:
    """``{(data set, system): folder of its metrics.json}`` from a bench ``--out`` folder's ``results.json``."""
    path = out / "results.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: pass an `attnsift bench quality --out` folder of a finished bench")
    rows = json.loads(path.read_text(encoding="utf-8")).get("results", [])
    if not rows:
        raise SystemExit(f"{path} lists no results: pass the --out folder of a bench that ran at least one system")
    return {(r["dataset"], r["system"]): out / r["folder"] for r in rows}


def per_query(folder: Path, metric: str) -> dict[str, float]:
    """``{query id: metric}`` from one result folder's ``metrics.json``."""
    path = folder / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: {folder} is not a complete `attnsift bench quality` result folder "
                         "(run the bench to completion first)")
    rows = json.loads(path.read_text(encoding="utf-8"))["report"]["per_query"]
    missing = [q for q, m in rows.items() if metric not in m]
    if missing:
        raise SystemExit(f"{path}: no {metric!r} for query {missing[0]!r}; pass --metric with one of {sorted(rows[missing[0]])}")
    return {q: float(m[metric]) for q, m in rows.items()}


def compare(resumed: Path, full: Path, metric: str = "nDCG@10") -> tuple[list[tuple[str, str, int, float]], bool]:
    """Rows ``(dataset, system, queries, max |difference|)`` and whether every difference is 0."""
    mine, theirs = _rows(resumed), _rows(full)
    rows: list[tuple[str, str, int, float]] = []
    for (ds, system), folder in sorted(mine.items()):
        if (ds, system) not in theirs:
            raise SystemExit(f"{full} has no result for {system} on {ds}: compare with a run of the same systems")
        a, b = per_query(folder, metric), per_query(theirs[(ds, system)], metric)
        absent = sorted(set(a) - set(b))
        if absent:
            raise SystemExit(f"{theirs[(ds, system)]} lacks query {absent[0]!r} that {folder} scored: "
                             "compare with a run of the same systems over at least the same queries")
        rows.append((ds, system, len(a), max((abs(a[q] - b[q]) for q in a), default=0.0)))
    return rows, all(r[3] == 0.0 for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("resumed", type=Path, help="the interrupted-then-resumed output folder")
    ap.add_argument("uninterrupted", type=Path, help="an uninterrupted output folder of the same systems")
    ap.add_argument("--metric", default="nDCG@10", help="per-query metric to compare (default nDCG@10)")
    args = ap.parse_args(argv)
    rows, same = compare(args.resumed, args.uninterrupted, args.metric)
    print(f"| data set | system | queries | max abs diff {args.metric} |\n|---|---|---|---|")
    for ds, system, n, diff in rows:
        print(f"| {ds} | {system} | {n} | {diff:.1e} |")
    print(f"\nidentical: {same}, queries compared: {sum(r[2] for r in rows)}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
