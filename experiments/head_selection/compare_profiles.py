"""Compare head profiles chosen on the same held-out queries (issue 7): is one model / setting better?

    python benchmarks/compare_profiles.py base.json finetuned.json [more.json ...] [--out table.md]

Each profile is what `attnsift analyze heads` wrote (the same held-out split for all). Printed per
profile: the first stage, every head summed under each calibration, the best single head and layer,
the selection and its held-out nDCG@10; and, against the first profile, how alike the per-head nDCG@10
maps are (Pearson correlation over the layer x head grid, mean absolute difference). All figures are on
the held-out queries only: this compares settings, it is not a test result.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

VARIANTS = ("raw", "cal", "masked")


def summary(profile: dict) -> dict:
    """The comparable figures of one profile."""
    out = {"model": profile.get("model"), "queries": profile.get("queries"), "first_stage": profile["first_stage"],
           "selection": profile["selection"], "command": profile.get("command")}
    for v in VARIANTS:
        heads = np.asarray(profile["per_head"][v], dtype=np.float64)
        layers = np.asarray(profile["per_layer"][v], dtype=np.float64)
        out[v] = {"all_heads": profile["all_heads"].get(v), "best_head": float(heads.max()),
                  "best_head_at": [int(i) for i in np.unravel_index(int(heads.argmax()), heads.shape)],
                  "best_layer": float(layers.max()), "best_layer_at": int(layers.argmax())}
    return out


def similarity(a: dict, b: dict) -> dict:
    """Pearson correlation and mean |difference| of two profiles' per-head nDCG@10 maps, per calibration."""
    res = {}
    for v in VARIANTS:
        x = np.asarray(a["per_head"][v], dtype=np.float64).ravel()
        y = np.asarray(b["per_head"][v], dtype=np.float64).ravel()
        if x.shape != y.shape:
            raise SystemExit(f"per-head maps of different shapes ({x.shape} vs {y.shape}): the profiles are of "
                             "different model architectures; compare only the summary rows")
        res[v] = {"pearson": float(np.corrcoef(x, y)[0, 1]), "mean_abs_diff": float(np.abs(x - y).mean())}
    return res


def table(paths: list[str], profiles: list[dict]) -> str:
    first = profiles[0]
    held = {"{dataset} {split}, {max_words}-word documents".format(**{"dataset": "?", "split": "?", "max_words": "?",
                                                                      **(p.get("selected_on") or {})})
            for p in profiles}
    if len({p["first_stage"] for p in profiles}) != 1 or len({p.get("queries") for p in profiles}) != 1:
        print("warning: the profiles were chosen on different held-out queries (first-stage nDCG@10 or query "
              "counts differ); their figures are not comparable", file=sys.stderr)
    rows = ["| profile | model | all heads raw / cal / masked | best head (masked) | best layer (masked) | "
            "selection | held-out nDCG@10 | per-head map vs first (r, mean abs diff, masked) |",
            "|---|---|---|---|---|---|---|---|"]
    for path, p in zip(paths, profiles):
        s = summary(p)
        sel = s["selection"]
        sim = similarity(first, p)["masked"] if p is not first else None
        rows.append(
            f"| {path} | {s['model']} | "
            + " / ".join(f"{s[v]['all_heads']:.4f}" for v in VARIANTS)
            + f" | {s['masked']['best_head']:.4f} at {tuple(s['masked']['best_head_at'])} | "
            f"{s['masked']['best_layer']:.4f} (layer {s['masked']['best_layer_at']}) | "
            f"{sel['k']} heads, {sel['variant']}/{sel['aggregate']} | {sel['heldout_ndcg']:.4f} | "
            + (f"{sim['pearson']:.3f}, {sim['mean_abs_diff']:.4f}" if sim else "-") + " |")
    head = (f"Held-out split(s): {'; '.join(sorted(held))}; {first.get('queries')} queries; first stage "
            f"nDCG@10 {first['first_stage']:.4f}.\n\n")
    return head + "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("profiles", nargs="+", help="profile JSON files from `attnsift analyze heads`")
    ap.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = ap.parse_args()
    if len(args.profiles) < 2:
        ap.error("give at least two profiles to compare")
    from attnsift.rerank.head_scoring import read_profile

    profiles = []
    for path in args.profiles:
        try:
            p = read_profile(path)  # the reranker's own reader: existence, JSON, format
        except (OSError, ValueError) as e:
            raise SystemExit(str(e))
        if p.get("reranker", "icr") != "icr":
            raise SystemExit(f"{path}: a {p.get('reranker')} profile; this compares ICR head profiles")
        profiles.append(p)
    text = table(args.profiles, profiles)
    print(text, end="")
    if args.out:
        from attnsift.io import atomic_file

        with atomic_file(args.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
