"""Encoding speed and quality of the encoder backends: PyTorch, ONNX Runtime float32, ONNX Runtime int8
(``onnx-int8``: dynamic, per-tensor activations; ``onnx-int8-block``: 8-bit blocks, ``MatMulNBits``;
``onnx-int8-mixed``: FFN MatMuls in 8-bit blocks, attention ones dynamic; ``onnx-int8-token``: dynamic
with per-token activation scales).

Speed: the same passages (the first ``--passages`` of the corpus, ``title + " " + text`` as the dense
retriever encodes them) encoded by each backend in one process, interleaved (torch, onnx, onnx-int8,
torch, ...), ``--repeats`` times; the minimum time per backend gives passages/s. The batch size is the
retrievers' (64) and every backend sorts texts by token length before batching, as ``Encoder`` does;
``--unsorted`` adds rows that encode in corpus order (batch by batch, no sorting across batches) to
show what length sorting is worth.

Agreement: on the same passages, the largest absolute difference of each ONNX backend's sentence
vectors (and token vectors) from torch's, and the smallest cosine.

Quality (``--quality``): a dense retriever per backend over the whole corpus, nDCG@10 and R@100 on
the test queries, and the difference from torch. The corpus goes through the encoding cache (keyed by
backend, so the backends never share vectors): an interrupted run resumes, and its encode time is not
a speed figure (speed is the section above). ``--no-speed`` runs the quality part alone and keeps the
speed figures already in ``<out>.json``.

    flock /tmp/attnsift-heavy.lock env ATTNSIFT_DATA=/work/shared/data .venv/bin/python \\
        benchmarks/encoding_speed.py --dataset scifact --passages 1000 --repeats 3 --quality \\
        --out benchmarks/results/encoding_speed.md

Paired quality (``--paired nfcorpus scifact``): the same dense retrieval, but over *every judged query*
of each data set (all qrels splits there are: NFCorpus train + dev + test, 3,237 queries; SciFact test,
300), nDCG@10 per query, and for each backend the mean paired difference to torch with two 95%
confidence intervals: a paired bootstrap over queries (10,000 resamples, seed 0, percentile interval)
and the paired t interval. A 0.002 margin is met with 95% confidence when the interval lies inside
[-0.002, +0.002]. Corpora go through the encoding cache as above.

    flock /tmp/attnsift-heavy.lock env ATTNSIFT_DATA=/work/shared/data .venv/bin/python \\
        benchmarks/encoding_speed.py --no-speed --paired nfcorpus scifact \\
        --backends torch onnx-int8 onnx-int8-mixed onnx-int8-token --out benchmarks/results/encoding_speed.md

Writes ``<out>`` (markdown) and ``<out minus .md>.json``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

BACKENDS = ("torch", "onnx", "onnx-int8", "onnx-int8-block", "onnx-int8-mixed", "onnx-int8-token")
#: Paired bootstrap: resamples and seed.
BOOT_RESAMPLES, BOOT_SEED = 10_000, 0
#: The paired rows of late interaction (plaid index) are stored under "<data set> <LATE_TAG>".
LATE_TAG = "late/plaid"


def load(dataset: str) -> tuple[object, list]:
    import attnsift

    ds = attnsift.load_dataset(dataset)
    return ds, list(ds.corpus.iter_documents())


def encode_unsorted(enc, texts: list[str]) -> np.ndarray:
    """Batches in input order: each call holds one batch, so no sorting happens across batches."""
    bs = enc.batch_size
    return np.concatenate([enc.encode_documents(texts[i:i + bs], progress=False) for i in range(0, len(texts), bs)])


def speed(encoders: dict, texts: list[str], repeats: int, unsorted: bool) -> dict:
    import torch

    times: dict[str, list[float]] = {}
    variants = [(b, False) for b in encoders] + ([(b, True) for b in encoders] if unsorted else [])
    for r in range(repeats):
        for b, uns in variants[r % len(variants):] + variants[: r % len(variants)]:  # rotate the order
            enc = encoders[b]
            t = time.perf_counter()
            encode_unsorted(enc, texts) if uns else enc.encode_documents(texts, progress=False)
            dt_s = time.perf_counter() - t
            key = f"{b} (unsorted)" if uns else b
            times.setdefault(key, []).append(dt_s)
            print(f"  repeat {r + 1}: {key:22s} {len(texts) / dt_s:7.1f} passages/s  load {os.getloadavg()[0]:.1f}",
                  flush=True)
    base = min(times["torch"])
    return {k: {"seconds": [round(x, 3) for x in v], "min_s": round(min(v), 3),
                "passages_per_s": round(len(texts) / min(v), 1), "speedup_vs_torch": round(base / min(v), 2),
                "torch_threads": torch.get_num_threads()} for k, v in times.items()}


def agreement(encoders: dict, texts: list[str]) -> dict:
    ref = encoders["torch"].encode_documents(texts, progress=False)
    ref_tok = encoders["torch"].encode_tokens(texts[:200], is_query=False, progress=False)
    out = {}
    for b, enc in encoders.items():
        if b == "torch":
            continue
        v = enc.encode_documents(texts, progress=False)
        cos = (v * ref).sum(1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(ref, axis=1))
        tok = enc.encode_tokens(texts[:200], is_query=False, progress=False)
        tcos = np.concatenate([(a * c).sum(1) for a, c in zip(tok, ref_tok)])  # rows are unit vectors
        out[b] = {"dense_max_abs_diff": float(np.abs(v - ref).max()), "dense_min_cosine": float(cos.min()),
                  "dense_mean_cosine": float(cos.mean()),
                  "tokens_max_abs_diff": float(max(np.abs(a - c).max() for a, c in zip(tok, ref_tok) if len(a))),
                  "tokens_min_cosine": float(tcos.min()), "token_texts": min(200, len(texts))}
    return out


def quality(encoders: dict, ds, docs: list, late: bool = False) -> dict:
    """nDCG@10 / R@100 of a dense retriever per backend (``late``: a late-interaction one, default index)."""
    from attnsift.eval.metrics import evaluate
    from attnsift.retrieval.dense import DenseRetriever
    from attnsift.retrieval.late_interaction import LateInteractionRetriever

    queries = list(ds.queries.values())
    out = {}
    for b, enc in encoders.items():
        t = time.perf_counter()
        r = (LateInteractionRetriever if late else DenseRetriever).from_corpus(docs, enc, progress=False)
        enc_s = time.perf_counter() - t
        run = r.retrieve_batch(queries, k=100, progress=False)
        rep = evaluate(run, ds.qrels, metrics=["nDCG@10", "R@100"], rel_level=ds.rel_level)
        out[b] = {"nDCG@10": round(float(rep["nDCG@10"]), 4), "R@100": round(float(rep["R@100"]), 4),
                  "corpus_encode_s": round(enc_s, 1), "docs": len(docs), "queries": len(queries),
                  "load_after": round(os.getloadavg()[0], 1)}
        print(f"  {'late' if late else 'dense'} quality {b}: {out[b]}", flush=True)
        del r
    for b in out:
        out[b]["nDCG@10_minus_torch"] = round(out[b]["nDCG@10"] - out["torch"]["nDCG@10"], 4)
    return out


def judged(name: str) -> tuple[object, dict, dict]:
    """The data set, and the queries and qrels of every split it has (train, dev, test; disjoint here)."""
    import attnsift

    ds = attnsift.load_dataset(name, split="test")  # an unknown name fails here, with the known ones
    queries, qrels = dict(ds.queries), dict(ds.qrels)
    for split in ("train", "dev"):
        try:
            d = attnsift.load_dataset(name, split=split)
        except ValueError as exc:  # attnsift's DatasetError: this split is not there
            if "has no split" not in str(exc):
                raise
            continue
        overlap = set(qrels) & set(d.qrels)
        if overlap:
            raise ValueError(f"{name}: split {split} shares {len(overlap)} queries with another split")
        queries.update(d.queries)
        qrels.update(d.qrels)
    return ds, queries, qrels


def paired_ci(diff: np.ndarray) -> dict:
    """Mean of paired differences, a percentile bootstrap 95% interval and the paired t interval."""
    from scipy import stats

    n = len(diff)
    rng = np.random.default_rng(BOOT_SEED)
    means = np.concatenate([diff[rng.integers(0, n, size=(1000, n))].mean(1) for _ in range(BOOT_RESAMPLES // 1000)])
    half = float(stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n))
    m = float(diff.mean())
    return {"mean_diff": round(m, 5), "boot_ci95": [round(float(np.percentile(means, 2.5)), 5),
                                                    round(float(np.percentile(means, 97.5)), 5)],
            "t_ci95": [round(m - half, 5), round(m + half, 5)], "sd": round(float(diff.std(ddof=1)), 4),
            "changed": int((np.abs(diff) > 1e-9).sum()), "better": int((diff > 1e-9).sum()),
            "worse": int((diff < -1e-9).sum())}


def paired(encoders: dict, name: str, data: tuple | None = None, late: bool = False) -> dict:
    """Dense nDCG@10 per query over every judged query of ``name`` (``data``: :func:`judged`'s answer,
    loaded here if None); paired differences to torch. ``late``: late interaction with the compressed
    (plaid) index at its defaults instead, each backend's index built from its own token vectors."""
    from attnsift.eval.metrics import evaluate
    from attnsift.retrieval.dense import DenseRetriever
    from attnsift.retrieval.late_interaction import LateInteractionRetriever

    ds, queries, qrels = data if data is not None else judged(name)
    docs = list(ds.corpus.iter_documents())
    qlist = list(queries.values())
    per: dict[str, np.ndarray] = {}
    out: dict = {}
    for b, enc in encoders.items():
        t = time.perf_counter()
        if late:
            r = LateInteractionRetriever.from_corpus(docs, enc, index="plaid", progress=False)
        else:
            r = DenseRetriever.from_corpus(docs, enc, progress=False)
        enc_s = time.perf_counter() - t
        rep = evaluate(r.retrieve_batch(qlist, k=100, progress=False), qrels, metrics=["nDCG@10"],
                       rel_level=ds.rel_level)
        qids = sorted(rep.per_query)
        per[b] = np.array([rep.per_query[q]["nDCG@10"] for q in qids])
        out[b] = {"nDCG@10": round(float(per[b].mean()), 5), "queries": len(qids), "docs": len(docs),
                  "corpus_encode_s": round(enc_s, 1), "load_after": round(os.getloadavg()[0], 1)}
        if b != "torch":
            out[b].update(paired_ci(per[b] - per["torch"]))
        print(f"  paired {name}{' late' if late else ''} {b}: {out[b]}", flush=True)
        del r
    return out


def markdown(res: dict) -> str:
    lines = [
        "# Encoding speed: PyTorch vs ONNX Runtime (float32, int8 dynamic, blockwise, mixed, per-token)", "",
        f"- command: `{res['command']}`",
        f"- date: {res['date']}",
        f"- machine: {res['machine']}",
        f"- encoder: {res['encoder']}; batch size {res['batch_size']}; threads: torch {res['torch_threads']}, "
        f"ONNX Runtime {res['onnx_threads']}",
        f"- load average (1, 5, 15 min) before / after the speed runs: {res['load_before']} / {res['load_after']}",
        f"- speed: {res['passages']} passages of {res['dataset']}, {res['repeats']} interleaved repeats, min time",
        "", "| backend | passages/s | x torch | times (s) |", "|---|---|---|---|",
    ]
    for k, v in res["speed"].items():
        lines.append(f"| {k} | {v['passages_per_s']} | {v['speedup_vs_torch']} | {', '.join(map(str, v['seconds']))} |")
    lines += ["", "Agreement with torch (same passages; token vectors on the first "
              f"{next(iter(res['agreement'].values()))['token_texts'] if res['agreement'] else 0}):", "",
              "| backend | dense max abs diff | dense min cosine | dense mean cosine | tokens max abs diff | tokens min cosine |",
              "|---|---|---|---|---|---|"]
    for k, v in res["agreement"].items():
        lines.append(f"| {k} | {v['dense_max_abs_diff']:.2e} | {v['dense_min_cosine']:.6f} | {v['dense_mean_cosine']:.6f} "
                     f"| {v['tokens_max_abs_diff']:.2e} | {v['tokens_min_cosine']:.6f} |")
    if res.get("quality"):
        q0 = next(iter(res["quality"].values()))
        if res.get("quality_command") and res["quality_command"] != res["command"]:
            lines += ["", f"Quality command: `{res['quality_command']}`"]
        lines += ["", f"Quality: dense retrieval over all {q0['docs']} documents, {q0['queries']} test queries "
                  f"(run {res.get('quality_date', res['date'])}, load average after {q0['load_after']}):", "",
                  "| backend | nDCG@10 | - torch | R@100 | corpus encode + index (s) |", "|---|---|---|---|---|"]
        for k, v in res["quality"].items():
            lines.append(f"| {k} | {v['nDCG@10']:.4f} | {v['nDCG@10_minus_torch']:+.4f} | {v['R@100']:.4f} | {v['corpus_encode_s']} |")
    if res.get("late"):
        q0 = next(iter(res["late"].values()))
        lines += ["", f"Late-interaction quality command: `{res.get('late_command')}`", "",
                  f"Late interaction (token vectors, the retriever's default index) over all {q0['docs']} documents, "
                  f"{q0['queries']} test queries (run {res.get('late_date')}, load average after {q0['load_after']}):", "",
                  "| backend | nDCG@10 | - torch | R@100 | corpus encode + index (s) |", "|---|---|---|---|---|"]
        for k, v in res["late"].items():
            lines.append(f"| {k} | {v['nDCG@10']:.4f} | {v['nDCG@10_minus_torch']:+.4f} | {v['R@100']:.4f} | {v['corpus_encode_s']} |")
    if res.get("paired"):
        lines += ["", f"Paired quality command: `{res.get('paired_command')}`", ""]
        if res.get("paired_late_command"):
            lines += [f"Paired `{LATE_TAG}` command (run {res.get('paired_late_date')}): `{res['paired_late_command']}`", ""]
        lines += [f"Paired quality (run {res.get('paired_date')}): nDCG@10 over every judged query (dense retrieval; "
                  f"rows marked `{LATE_TAG}`: late interaction with the compressed index at its defaults), per-query "
                  f"differences to torch; 95% intervals: paired bootstrap over queries ({BOOT_RESAMPLES:,} resamples, "
                  f"seed {BOOT_SEED}, percentile) and paired t. \"no\" in the last column means *not shown* (the interval "
                  "reaches past the margin), not shown to differ:", "",
                  "| data set | backend | queries | nDCG@10 | - torch (mean paired) | 95% CI bootstrap | 95% CI t "
                  "| queries better / worse | bootstrap CI inside +-0.002 |", "|---|---|---|---|---|---|---|---|---|"]
        for name, rows in res["paired"].items():
            for b, v in rows.items():
                if b == "torch":
                    lines.append(f"| {name} | torch | {v['queries']} | {v['nDCG@10']:.4f} | - | - | - | - | - |")
                    continue
                lo, hi = v["boot_ci95"]
                inside = "yes" if -0.002 <= lo and hi <= 0.002 else "no"
                lines.append(f"| {name} | {b} | {v['queries']} | {v['nDCG@10']:.4f} | {v['mean_diff']:+.4f} "
                             f"| [{lo:+.4f}, {hi:+.4f}] | [{v['t_ci95'][0]:+.4f}, {v['t_ci95'][1]:+.4f}] "
                             f"| {v['better']} / {v['worse']} | {inside} |")
    lines += ["", "Details (JSON): " + Path(res["json"]).name, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--passages", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads [torch's]")
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS))
    ap.add_argument("--unsorted", action="store_true", help="also time encoding in corpus order (no length sorting)")
    ap.add_argument("--quality", action="store_true", help="nDCG@10 of a dense retriever per backend (whole corpus)")
    ap.add_argument("--late", action="store_true", help="also nDCG@10 of a late-interaction retriever per backend")
    ap.add_argument("--quality-backends", nargs="+", default=None,
                    help="backends of the quality runs [all of --backends; torch is always added]")
    ap.add_argument("--no-speed", action="store_true", help="skip speed and agreement; keep those of <out>.json")
    ap.add_argument("--paired", nargs="+", default=None, metavar="DATASET",
                    help="dense nDCG@10 over every judged query of each data set (all qrels splits), paired "
                         "differences to torch with 95%% intervals (e.g. nfcorpus scifact)")
    ap.add_argument("--paired-late", nargs="+", default=None, metavar="DATASET",
                    help="the same for late interaction with the compressed (plaid) index, each backend's own")
    ap.add_argument("--out", default="benchmarks/results/encoding_speed.md")
    args = ap.parse_args(argv)
    if "torch" not in args.backends:
        ap.error("--backends must include torch (the reference)")
    import torch

    from attnsift.retrieval.encoders import Encoder

    # A bad name fails here, before any encoding.
    paired_data = {name: judged(name) for name in dict.fromkeys([*(args.paired or []), *(args.paired_late or [])])}
    ds, docs = load(args.dataset)
    texts = [d.contents for d in docs[: args.passages]]
    encoders = {}
    for b in args.backends:
        t = time.perf_counter()
        encoders[b] = Encoder(args.encoder, device="cpu", backend=b,
                              **({"threads": args.threads} if b != "torch" and args.threads else {}))
        print(f"{b}: built in {time.perf_counter() - t:.1f} s", flush=True)
    out = Path(args.out)
    jpath = out.with_suffix(".json")
    sp = ag = load_before = load_after = None
    if not args.no_speed:
        for enc in encoders.values():  # warm-up (first-call allocations, ONNX Runtime's arena)
            enc.encode_documents(texts[:64], progress=False)
        load_before = [round(x, 2) for x in os.getloadavg()]
        print("speed:", flush=True)
        sp = speed(encoders, texts, args.repeats, args.unsorted)
        load_after = [round(x, 2) for x in os.getloadavg()]
        print("agreement:", flush=True)
        ag = agreement(encoders, texts)
        print(json.dumps(ag, indent=1), flush=True)
    q = late = None
    qenc = {b: e for b, e in encoders.items() if args.quality_backends is None or b in {"torch", *args.quality_backends}}
    if args.quality:
        print("quality:", flush=True)
        q = quality(qenc, ds, docs)
    if args.late:
        print("late-interaction quality:", flush=True)
        late = quality(qenc, ds, docs, late=True)
    pq = {}
    for name in args.paired or []:
        print(f"paired quality on {name}:", flush=True)
        pq[name] = paired(qenc, name, paired_data[name])
    for name in args.paired_late or []:
        print(f"paired late-interaction (plaid) quality on {name}:", flush=True)
        pq[f"{name} {LATE_TAG}"] = paired(qenc, name, paired_data[name], late=True)
    # Read what is there only now: a speed run and a quality run may overlap, each keeps the other's part.
    old = json.loads(jpath.read_text(encoding="utf-8")) if jpath.is_file() else {}
    if args.no_speed:
        sp, ag = old.get("speed", {}), old.get("agreement", {})
        load_before, load_after = old.get("load_before"), old.get("load_after")
    if q is None:
        q = old.get("quality")
    elif args.quality_backends is not None:  # keep the other backends' figures of the last run
        q = {**{k: v for k, v in (old.get("quality") or {}).items() if k not in q}, **q}
        for b in q:
            q[b]["nDCG@10_minus_torch"] = round(q[b]["nDCG@10"] - q["torch"]["nDCG@10"], 4)
    if late is None:
        late = old.get("late")
    elif args.quality_backends is not None:  # as for quality: keep the other backends' late figures
        late = {**{k: v for k, v in (old.get("late") or {}).items() if k not in late}, **late}
        for b in late:
            late[b]["nDCG@10_minus_torch"] = round(late[b]["nDCG@10"] - late["torch"]["nDCG@10"], 4)
    old_pq = old.get("paired") or {}
    for name, rows in pq.items():  # keep the other backends' rows when they were paired with the same torch run
        prev = old_pq.get(name) or {}
        if prev.get("torch", {}).get("nDCG@10") == rows["torch"]["nDCG@10"]:
            pq[name] = {**{k: v for k, v in prev.items() if k not in rows}, **rows}
    pq = {**{k: v for k, v in old_pq.items() if k not in pq}, **pq}
    rank = {b: i for i, b in enumerate(BACKENDS)}
    pq = {n: {k: d[k] for k in sorted(d, key=lambda k: rank.get(k, len(rank)))} for n, d in pq.items()}
    q, late = ({k: d[k] for k in sorted(d, key=lambda k: rank.get(k, len(rank)))} if d else d for d in (q, late))
    onnx_threads = sorted({e._onnx.threads for e in encoders.values() if getattr(e, "_onnx", None) is not None})
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    command = " ".join(["python", *[a if " " not in a else repr(a) for a in sys.argv]])
    res = {
        "command": old.get("command", command) if args.no_speed else command,
        "date": old.get("date", now) if args.no_speed else now,
        "machine": machine(torch.__version__),
        "encoder": f"{encoders['torch'].name} (dim {encoders['torch'].dim}, max {encoders['torch'].max_length} tokens)",
        "batch_size": encoders["torch"].batch_size, "torch_threads": torch.get_num_threads(),
        "onnx_threads": onnx_threads[0] if len(onnx_threads) == 1 else onnx_threads,
        "dataset": args.dataset,
        "load_before": load_before, "load_after": load_after,
        "speed": sp, "agreement": ag, "quality": q, "late": late, "json": str(jpath),
        "passages": old.get("passages") if args.no_speed else len(texts),
        "repeats": old.get("repeats") if args.no_speed else args.repeats,
    }
    if args.quality:
        res["quality_command"], res["quality_date"] = command, now
    elif q is not None:
        res["quality_command"], res["quality_date"] = old.get("quality_command"), old.get("quality_date")
    res["paired"] = pq or None
    if args.paired:
        res["paired_command"], res["paired_date"] = command, now
    elif pq:
        res["paired_command"], res["paired_date"] = old.get("paired_command"), old.get("paired_date")
    if args.paired_late:
        res["paired_late_command"], res["paired_late_date"] = command, now
    elif old.get("paired_late_command"):
        res["paired_late_command"], res["paired_late_date"] = old["paired_late_command"], old.get("paired_late_date")
    if args.late:
        res["late_command"], res["late_date"] = command, now
    elif late is not None:
        res["late_command"], res["late_date"] = old.get("late_command"), old.get("late_date")
    out.parent.mkdir(parents=True, exist_ok=True)
    _write(jpath, json.dumps(res, indent=2) + "\n")
    md = markdown(res)
    if out.exists():  # keep a hand-written reading below the generated part
        old = out.read_text(encoding="utf-8")
        marker = "\n## Reading\n"
        if marker in old:
            md = md + marker + old.split(marker, 1)[1]
    _write(out, md)
    print(md)
    return 0


def machine(torch_version: str) -> str:
    """The machine line: cores, CPU family / model (from /proc/cpuinfo), torch's and ONNX Runtime's versions."""
    cpu = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            cpu.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = "not installed"
    return (f"{os.cpu_count()}-core {cpu.get('model name', platform.processor() or '?')} VM ({platform.machine()}, "
            f"CPU family {cpu.get('cpu family', '?')} model {cpu.get('model', '?')}), "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, no GPU, torch {torch_version}, "
            f"onnxruntime {ort}")


def _write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary name beside ``path``, then rename it into place."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
