"""Write a synthetic MS MARCO passage collection in exactly the official file format.

Files written to ``--out`` (the layout of the official downloads, unpacked)::

    collection.tsv          "pid\\ttext" per line, pids 0..N-1 in order
    queries.dev.small.tsv   "qid\\ttext" per line
    qrels.dev.small.tsv     "qid\\t0\\tpid\\t1" per line (TREC qrels, tab-separated, one relevant passage per query)
    top1000.dev.tsv         "qid\\tpid\\tquery\\tpassage" for the first --top1000-queries queries
    (--tar) collection.tar.gz, queries.tar.gz (queries.dev.small.tsv + qrels.dev.small.tsv), top1000.dev.tar.gz

How the text is made:

- a Zipf-Mandelbrot vocabulary (p(r) ~ 1/(r + 2.7)^1.05). Its 40 most frequent words are English
  function words (the, of, and, ...: Lucene's analyzer stops some of them, as with real text); the rest
  are pronounceable letter words built from consonant-vowel syllables (``kalinor``, ``bumate``), shorter
  for frequent ranks, so the analyzer treats them as words. The vocabulary grows with the collection
  (Heaps' law: ~60 * sqrt(tokens) words, ~1.3M at full size);
- passage lengths log-normal with MS MARCO's shape (mean ~56 words, median ~52, long right tail,
  clipped to 2..300 words), first letter capitalised;
- each query (~6 words: a question opener such as "what is" + 2-4 of the rarer words of its relevant
  passage + sometimes one random word) has one relevant passage, so BM25 finds it in the top 10 for
  most queries;
- ``top1000.dev.tsv``: a stand-in for the official BM25 top-1000, not a real BM25 run: the relevant
  passage at an exponentially distributed rank (mean 10) among random passages.

Reproducible: everything is drawn from numpy generators seeded by ``--seed`` (passages in fixed
chunks of 65,536, each with its own generator seeded ``[seed, chunk]``), so the same seed and sizes
give byte-identical files. Memory is constant in the collection size (one chunk at a time plus the
query and top1000 texts); files are written to temporaries and renamed when complete.

For offline tests and benchmarks of ``--dataset msmarco`` (the real files cannot be downloaded there).
Usage (``benchmarks/synthetic_msmarco.py`` runs the same)::

    python -m attnsift.eval.datasets.synthetic_msmarco --passages 8841823 --queries 6980 --out /scratch/msmarco-full
"""
from __future__ import annotations

import argparse
import gzip
import os
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

CHUNK = 65536
FUNCTION_WORDS = ("the of and to a in is for that on with as are was by it be or from at this an which can "
                  "you your have not will has its more also when what how one they their other").split()
QUESTION_OPENERS = ("what is", "what is the", "how to", "how long does", "what does", "who is", "define", "where is",
                    "how much is", "what are", "why do", "when was", "which", "meaning of")
CONSONANTS = np.frombuffer(b"bcdfghklmnprstvwz", dtype=np.uint8)
VOWELS = np.frombuffer(b"aeiou", dtype=np.uint8)
CODAS = np.frombuffer(b"nrltmkd", dtype=np.uint8)
LEN_MU, LEN_SIGMA = 3.93, 0.42  # log-normal: mean exp(mu + sigma^2/2) ~ 55.7 words


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def vocab_size(passages: int) -> int:
    """Heaps' law on the expected token count: ~60 * sqrt(tokens), at least 2,000 words."""
    return max(2000, int(60 * np.sqrt(passages * 56.0)))


def make_vocabulary(size: int, seed: int) -> list[bytes]:
    """``size`` distinct lower-case words, most frequent first (function words, then syllable words)."""
    rng = np.random.default_rng([seed, 1 << 30])
    words: list[bytes] = [w.encode() for w in FUNCTION_WORDS][:size]
    seen = set(words)
    while len(words) < size:
        n = size - len(words)
        r = np.arange(len(words), size)
        nsyl = np.clip(np.rint(0.5 + 0.45 * np.log10(r + 10.0) + rng.normal(0, 0.6, n)), 1, 5).astype(np.int64)
        nsyl += (nsyl == 1) & (rng.random(n) < 0.6)  # few one-syllable words
        cons = CONSONANTS[rng.integers(0, len(CONSONANTS), (n, 5))]
        vows = VOWELS[rng.integers(0, len(VOWELS), (n, 5))]
        coda = np.where(rng.random((n, 5)) < 0.3, CODAS[rng.integers(0, len(CODAS), (n, 5))], 0).astype(np.uint8)
        # 3 bytes per syllable (consonant, vowel, optional coda as 0 = nothing); drop zeros when joining.
        grid = np.stack([cons, vows, coda], axis=2).reshape(n, 15)
        grid[np.arange(15)[None, :] >= 3 * nsyl[:, None]] = 0
        raw = grid.tobytes()
        for i in range(n):
            w = raw[15 * i:15 * i + 15].replace(b"\0", b"")
            if w not in seen:
                seen.add(w)
                words.append(w)
    return words


def _cdf(size: int) -> np.ndarray:
    p = 1.0 / (np.arange(size, dtype=np.float64) + 2.7) ** 1.05
    c = np.cumsum(p)
    return c / c[-1]


def _passage_lengths(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.clip(np.rint(rng.lognormal(LEN_MU, LEN_SIGMA, n)), 2, 300).astype(np.int64)


def _sample_words(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1).astype(np.int32)


def _make_query(rng: np.random.Generator, tokens: np.ndarray, words: list[bytes], cdf: np.ndarray) -> str:
    """Opener + 2-4 of the rarer two thirds of the passage's content words (+ one random word 60% of the time)."""
    content = np.unique(tokens[tokens >= len(FUNCTION_WORDS)])
    if len(content) == 0:
        content = np.unique(tokens)
    rare = content[len(content) // 3:] if len(content) >= 6 else content  # the rarer two thirds (higher rank)
    k = min(len(rare), int(rng.integers(2, 5)))
    picked = list(rng.choice(rare, size=k, replace=False))
    if rng.random() < 0.6:
        picked.append(int(_sample_words(rng, cdf, 1)[0]))
    opener = QUESTION_OPENERS[int(rng.integers(0, len(QUESTION_OPENERS)))]
    return " ".join([opener] + [words[int(t)].decode() for t in picked])


class _Tmp:
    """A file written under a temporary name and renamed onto ``path`` by :meth:`commit`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.fh = open(self.tmp, "wb")

    def commit(self) -> None:
        self.fh.close()
        os.replace(self.tmp, self.path)


def generate(passages: int, queries: int, out: str | Path, seed: int = 0, top1000_queries: int = 100,
             top1000_depth: int = 1000, tar: bool = False, progress: bool = True) -> dict:
    """Write the collection; returns sizes and timings. See the module docstring."""
    if passages < 2 or queries < 1:
        raise ValueError(f"need --passages >= 2 and --queries >= 1, got {passages} and {queries}")
    if queries > passages:
        raise ValueError(f"--queries ({queries}) cannot exceed --passages ({passages}): one relevant passage each")
    top1000_queries = min(max(0, top1000_queries), queries)
    top1000_depth = min(max(1, top1000_depth), passages)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    words = make_vocabulary(vocab_size(passages), seed)
    wbytes = [w + b" " for w in words]
    wlen = np.array([len(w) for w in wbytes], dtype=np.int64)
    woff = np.concatenate([[0], np.cumsum(wlen)[:-1]]).astype(np.int64)
    wbuf = np.frombuffer(b"".join(wbytes), dtype=np.uint8)
    cdf = _cdf(len(words))

    g = np.random.default_rng([seed, 1 << 31])
    rel_pids = g.choice(passages, size=queries, replace=False)
    qids = g.choice(np.arange(1_000_000, 1_000_000 + 20 * queries), size=queries, replace=False)
    q_rngs = [np.random.default_rng([seed, 1 << 32, i]) for i in range(queries)]
    want: dict[int, list[int]] = {}  # pid -> query indexes it is relevant to
    for i, p in enumerate(rel_pids.tolist()):
        want.setdefault(p, []).append(i)
    cand: list[np.ndarray] = []  # top1000 candidate pids per top1000 query, in rank order
    for i in range(top1000_queries):
        others = g.choice(passages, size=min(passages, top1000_depth + 1), replace=False)
        others = others[others != rel_pids[i]][:top1000_depth - 1]
        pos = min(int(g.exponential(10.0)), len(others))
        cand.append(np.insert(others, pos, rel_pids[i]))
    cand_pids = set(np.concatenate(cand).tolist()) if cand else set()
    cand_text: dict[int, bytes] = {}
    qtext: list[str | None] = [None] * queries

    coll = _Tmp(out / "collection.tsv")
    nchunks = (passages + CHUNK - 1) // CHUNK
    total_bytes = 0
    for c in range(nchunks):
        lo, hi = c * CHUNK, min(passages, (c + 1) * CHUNK)
        rng = np.random.default_rng([seed, c])
        lens = _passage_lengths(rng, hi - lo)
        toks = _sample_words(rng, cdf, int(lens.sum()))
        tl = wlen[toks]
        starts = np.cumsum(tl) - tl
        body = wbuf[np.repeat(woff[toks] - starts, tl) + np.arange(int(tl.sum()), dtype=np.int64)]
        tok_end = np.cumsum(lens)
        pend = np.cumsum(np.add.reduceat(tl, tok_end - lens))  # byte end of each passage
        pstart = pend - np.add.reduceat(tl, tok_end - lens)
        body[pend - 1] = ord("\n")
        body[pstart] -= 32  # capitalise (every word starts with a lower-case ASCII letter)
        data = body.tobytes()
        ps, pe = pstart.tolist(), pend.tolist()
        coll.fh.write(b"".join([b"%d\t" % (lo + j) + data[ps[j]:pe[j]] for j in range(hi - lo)]))
        total_bytes += len(data)
        for p in [p for p in range(lo, hi) if p in want]:
            j = p - lo
            ptoks = toks[tok_end[j] - lens[j]:tok_end[j]]
            for i in want[p]:
                qtext[i] = _make_query(q_rngs[i], ptoks, words, cdf)
        for p in [p for p in cand_pids if lo <= p < hi]:
            cand_text[p] = data[ps[p - lo]:pe[p - lo] - 1]
        if progress and (c % 16 == 15 or c == nchunks - 1):
            el = time.perf_counter() - t0
            _progress(f"[synthetic_msmarco] {hi:,}/{passages:,} passages, {el:.0f}s, "
                      f"eta {el / hi * (passages - hi):.0f}s")
    coll.commit()

    qf, rf = _Tmp(out / "queries.dev.small.tsv"), _Tmp(out / "qrels.dev.small.tsv")
    for i in range(queries):
        qf.fh.write(f"{qids[i]}\t{qtext[i]}\n".encode())
        rf.fh.write(f"{qids[i]}\t0\t{rel_pids[i]}\t1\n".encode())
    qf.commit()
    rf.commit()
    files = ["collection.tsv", "queries.dev.small.tsv", "qrels.dev.small.tsv"]
    if top1000_queries:
        tf = _Tmp(out / "top1000.dev.tsv")
        for i in range(top1000_queries):
            head = f"{qids[i]}\t".encode()
            q = f"\t{qtext[i]}\t".encode()
            tf.fh.write(b"".join([head + b"%d" % p + q + cand_text[p] + b"\n" for p in cand[i].tolist()]))
        tf.commit()
        files.append("top1000.dev.tsv")
    gen_s = time.perf_counter() - t0
    if tar:
        _progress("[synthetic_msmarco] writing the .tar.gz archives")
        archives = {"collection.tar.gz": ["collection.tsv"],
                    "queries.tar.gz": ["queries.dev.small.tsv", "qrels.dev.small.tsv"]}
        if top1000_queries:
            archives["top1000.dev.tar.gz"] = ["top1000.dev.tsv"]
        for name, members in archives.items():
            t = _Tmp(out / name)
            # gzip header without a time stamp or file name, so the same seed gives the same archive bytes
            with gzip.GzipFile(filename="", mode="wb", fileobj=t.fh, compresslevel=6, mtime=0) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tf_:
                for m in members:
                    info = tf_.gettarinfo(str(out / m), arcname=m)
                    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                    with open(out / m, "rb") as fh:
                        tf_.addfile(info, fh)
            t.commit()
            files.append(name)
    return {"passages": passages, "queries": queries, "vocabulary": len(words), "seed": seed,
            "generate_s": round(gen_s, 1), "total_s": round(time.perf_counter() - t0, 1),
            "files": {f: (out / f).stat().st_size for f in files}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--passages", type=int, required=True, help="collection size (8841823 = MS MARCO)")
    ap.add_argument("--queries", type=int, required=True, help="queries with one relevant passage (6980 = dev/small)")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top1000-queries", type=int, default=100,
                    help="queries written to top1000.dev.tsv (0: no file; default 100)")
    ap.add_argument("--top1000-depth", type=int, default=1000, help="candidates per query in top1000.dev.tsv")
    ap.add_argument("--tar", action="store_true", help="also write the official .tar.gz archives")
    a = ap.parse_args(argv)
    try:
        res = generate(a.passages, a.queries, a.out, a.seed, a.top1000_queries, a.top1000_depth, a.tar)
    except ValueError as exc:
        ap.error(str(exc))
    import json
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
