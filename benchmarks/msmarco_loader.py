"""The MS MARCO loader path at full size: load the 6,980 dev/small queries, build the collection's
offset index, ``subset`` 1,000 random ids, ``get``, the fingerprint, the top1000 run, and one full
streaming pass; times and RSS as JSON on stdout.

Usage::

    python benchmarks/msmarco_loader.py --folder /scratch/msmarco-full --cache /scratch/cache [--no-stream]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", required=True, type=Path, help="a folder of official MS MARCO passage files")
    ap.add_argument("--cache", required=True, type=Path, help="$ATTNSIFT_CACHE for the offset index")
    ap.add_argument("--no-stream", action="store_true", help="skip the full iter_documents pass")
    a = ap.parse_args(argv)
    data = Path(tempfile.mkdtemp(prefix="msmarco-data-"))
    (data / "msmarco-passage").symlink_to(a.folder.resolve())
    os.environ.update(ATTNSIFT_DATA=str(data), ATTNSIFT_CACHE=str(a.cache), ATTNSIFT_OFFLINE="1")
    from attnsift.eval.datasets import load_dataset

    res: dict = {"folder": str(a.folder), "collection_bytes": (a.folder / "collection.tsv").stat().st_size,
                 "loadavg_start": os.getloadavg(), "rss_start_mb": round(_rss_mb(), 1)}
    t = time.perf_counter()
    ds = load_dataset("msmarco")
    res["load_dataset_s"] = round(time.perf_counter() - t, 2)
    res["queries"] = len(ds.queries)
    store = ds.corpus.store
    t = time.perf_counter()
    n = store.count()
    res["offset_index_build_s"] = round(time.perf_counter() - t, 2)
    res["passages"] = n
    res["rss_after_index_mb"] = round(_rss_mb(), 1)
    res["peak_rss_after_index_mb"] = round(_peak_mb(), 1)
    t = time.perf_counter()
    fresh = type(store)(store.folder)
    res["reopen_count_s"] = round(time.perf_counter() - t, 4)
    res["reopen_known_len"] = fresh.known_len
    times = []
    for seed in range(5):
        ids = [str(i) for i in random.Random(seed).sample(range(n), 1000)]
        t = time.perf_counter()
        got = ds.corpus.subset(ids)
        times.append(time.perf_counter() - t)
        assert len(got) == 1000
    res["subset_1000_s"] = {"first": round(times[0], 4), "median_of_5": round(statistics.median(times), 4)}
    t = time.perf_counter()
    for i in random.Random(9).sample(range(n), 100):
        ds.corpus[str(i)]
    res["get_ms"] = round((time.perf_counter() - t) * 10, 3)
    t = time.perf_counter()
    res["fingerprint"] = ds.corpus.fingerprint()[:16]
    res["fingerprint_s"] = round(time.perf_counter() - t, 4)
    if "top1000" in ds.runs:
        t = time.perf_counter()
        run = ds.load_run("top1000")
        res["top1000_run"] = {"queries": len(run), "s": round(time.perf_counter() - t, 2)}
    res["rss_before_stream_mb"] = round(_rss_mb(), 1)
    if not a.no_stream:
        t = time.perf_counter()
        k = 0
        for _ in ds.corpus.iter_documents():
            k += 1
        res["iter_documents"] = {"docs": k, "s": round(time.perf_counter() - t, 1), "rss_after_mb": round(_rss_mb(), 1)}
    res["peak_rss_mb"] = round(_peak_mb(), 1)
    res["loadavg_end"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    (data / "msmarco-passage").unlink()
    data.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
