"""Shared test helpers (tests/ is on sys.path through its conftest)."""
from __future__ import annotations

import contextlib
import functools

import pytest


@functools.lru_cache(maxsize=None)
def tiny_llama_and_tokenizer(layers: int = 2, heads: int = 2, seed: int = 0):
    """A tiny random Llama with SmolLM2's tokenizer (skips the test when the tokenizer is missing)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from attnsift.rerank.llm import load_tokenizer

    try:
        tok = load_tokenizer("smollm2-135m")
    except ValueError as exc:
        pytest.skip(str(exc))
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=1, max_position_embeddings=4096)
    return LlamaForCausalLM(cfg).eval(), tok


def toy_ranking(n: int = 5):
    """A Ranking of ``n`` short documents of different lengths, first-stage scores 10, 9, ... (query q1)."""
    from attnsift.types import Candidate, Document, Query, Ranking

    return Ranking(Query("q1", "what prevents scurvy?"), tuple(
        Candidate(f"d{i}", float(10 - i), Document(f"d{i}", " ".join(f"w{i}x{j}" for j in range(6 + i))))
        for i in range(n)))


def tiny_icr(**options):
    """An ICRReranker over a 3-layer, 2-head random Llama (seed 1) with SmolLM2's tokenizer."""
    from attnsift.rerank.icr import ICRReranker

    m, t = tiny_llama_and_tokenizer(layers=3, heads=2, seed=1)
    return ICRReranker(m, tokenizer=t, **options)


#: Six short texts on six topics: a corpus for the encoder tests (dense, late interaction, the cache).
SIX_TOPIC_TEXTS = [
    "Cats purr when they are content and sleep most of the day.",
    "The stock market fell sharply after the central bank raised interest rates.",
    "Vitamin D supplementation and bone mineral density in older adults.",
    "Python is a programming language with dynamic typing.",
    "Dogs bark at strangers, especially at night.",
    "Insulin resistance is a hallmark of type 2 diabetes.",
]

def clustered_vectors(n: int, dim: int, seed: int = 0, centres: int = 300):
    """Unit vectors around ``centres`` fixed random centres, ~10 per centre (neighbourhoods to find,
    not ties in noise); ``seed`` draws the points (queries: another seed, the same centres)."""
    import numpy as np

    c = np.random.default_rng(99).standard_normal((centres, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = c[rng.integers(0, centres, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


#: 48 short notes over six topics (dense index tests that need more documents than lists).
TOPIC_NOTES = [f"{topic} note {i}: {detail}" for i, (topic, detail) in enumerate(
    (t, d) for t in ("cats and kittens", "stock markets", "vitamin D and bones", "python programming",
                     "french history", "insulin and diabetes")
    for d in ("a short summary", "the main findings", "an open question", "a worked example", "common mistakes",
              "a brief history", "recent results", "what experts say"))]


#: A tiny BEIR data set whose every query has an unambiguous best document (CLI tests of the first stages).
TINY_DOCS = {"d1": ("Scurvy", "Vitamin C deficiency causes scurvy in sailors."),
             "d2": ("Citrus", "Lemons and limes contain ascorbic acid."),
             "d3": ("Rocks", "Granite is an igneous rock."),
             "d4": ("Bones", "Vitamin D helps calcium absorption for bone density."),
             "d5": ("Sleep", "Adults need seven hours of sleep."),
             "d6": ("Ships", "Sailing ships crossed the Atlantic."),
             "d7": ("Milk", "Milk is a source of calcium and vitamin D."),
             "d8": ("Stars", "Stars fuse hydrogen into helium.")}
TINY_QUERIES = {"q1": "what causes scurvy", "q2": "vitamin D and bones", "q3": "how do stars shine"}
TINY_QRELS = [("q1", "d1"), ("q1", "d2"), ("q2", "d4"), ("q2", "d7"), ("q3", "d8")]


def write_tiny_beir(root, docs=None):
    """Write the tiny data set (or ``docs``: id -> (title, text)) as a BEIR folder at ``root``; returns it."""
    import json
    from pathlib import Path

    root = Path(root)
    docs = TINY_DOCS if docs is None else docs
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n"
                                               for i, (t, x) in docs.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in TINY_QUERIES.items()))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in TINY_QRELS))
    return root


def write_tiny_encoder(folder, layers: int = 1, seed: int = 0, positions: int | None = None):
    """A random-weight BertModel (hidden 32, ``layers`` layers, 2 heads; ``positions`` position embeddings,
    None: BERT's 512) with the all-MiniLM-L6-v2 WordPiece tokenizer, saved to ``folder``; returns it as a str."""
    import torch
    import transformers

    from attnsift.retrieval.encoders import resolve_model

    torch.manual_seed(seed)
    extra = {} if positions is None else {"max_position_embeddings": positions}
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                                  intermediate_size=64, **extra)
    transformers.BertModel(cfg).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(resolve_model("minilm")[1]).save_pretrained(folder)
    return str(folder)


@contextlib.contextmanager
def tiny_encoder_cache(tmp_path_factory, name: str):
    """A tiny 2-layer BERT folder (:func:`write_tiny_encoder`) under a fresh folder ``name``, with
    $ATTNSIFT_CACHE pointed at ``cache`` beside it while open; yields ``(folder, cache)``."""
    root = tmp_path_factory.mktemp(name)
    folder = write_tiny_encoder(root / "tinybert", layers=2, positions=128)
    mp = pytest.MonkeyPatch()
    mp.setenv("ATTNSIFT_CACHE", str(root / "cache"))
    try:
        yield folder, root / "cache"
    finally:
        mp.undo()


def write_tiny_cross_encoder(folder, num_labels: int = 1, seed: int = 0):
    """A random-weight 2-layer BertForSequenceClassification with the all-MiniLM-L6-v2 WordPiece tokenizer,
    saved to ``folder`` (no download: the tokenizer comes from the offline ``minilm`` package)."""
    from pathlib import Path

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from attnsift.retrieval.encoders import resolve_model

    try:
        location = resolve_model("minilm")[1]
    except (ImportError, FileNotFoundError) as exc:  # the offline encoder package is missing
        pytest.skip(str(exc))
    tok = transformers.AutoTokenizer.from_pretrained(location)
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
                                  initializer_range=0.5)  # wide weights: distinct scores for distinct texts
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification(cfg).eval()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def block_scores_from_attention(attention, offsets, order, rows: int) -> list[float]:
    """BlockRank's document scores from one layer's eager attention probabilities ``[1, H, T, T]``: the last
    ``rows`` query rows' mass on each document block, renormalised over the document span, averaged over
    heads and rows, returned in the ranking's order (``order``: prompt position -> ranking index)."""
    T = attention.shape[-1]
    A = attention[0, :, T - rows:, :].double()  # [H, rows, T]
    doc = A[..., offsets[1]:offsets[-2]]
    doc = doc / doc.sum(-1, keepdim=True)
    per_block = [float(doc[..., offsets[b] - offsets[1]:offsets[b + 1] - offsets[1]].sum(-1).mean())
                 for b in range(1, len(offsets) - 2)]
    scores = [0.0] * len(per_block)
    for j, idx in enumerate(order):
        scores[idx] = per_block[j]
    return scores


def unit_rows(x):
    """Rows of ``x`` scaled to unit length, float32."""
    import numpy as np

    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def plaid_reference_maxsim(index, q, docs):
    """float64 MaxSim of query tokens ``q`` over a PlaidIndex's compressed tokens of ``docs``, with their stored
    (one-byte) scales: what every exact-stage implementation computes (0 for a document without tokens)."""
    import numpy as np

    out = np.zeros(docs.size)
    s = q.astype(np.float64) @ index.centroids.T.astype(np.float64)
    for j, d in enumerate(docs):
        rows = np.arange(index.offsets[d], index.offsets[d + 1])
        if rows.size:
            res = index._unnormalised(rows).astype(np.float64) - index.centroids[index.codes[rows]]
            m = (s[:, index.codes[rows].astype(np.int64)] + q.astype(np.float64) @ res.T) * index.inverse_norms(rows)
            out[j] = m.max(1).sum()
    return out


def plaid_toy(seed: int, dim: int, *, ndocs: int = 120, nwords: int = 24, lengths: tuple = (1, 30),
              empty: tuple = (), single: tuple = (), ncentroids: int = 32, qlens: tuple = (),
              query_seed: int | None = None) -> dict:
    """A small PlaidIndex over documents of ``lengths`` tokens drawn around ``nwords`` directions (``empty``
    documents without tokens, ``single`` ones of one token), and queries of each length in ``qlens`` near
    the same directions (from ``query_seed``'s generator, or the corpus's when None)."""
    import numpy as np

    from attnsift.indexes.plaid_index import PlaidIndex

    rng = np.random.default_rng(seed)
    words = unit_rows(rng.normal(size=(nwords, dim)))
    lens = rng.integers(lengths[0], lengths[1], size=ndocs)
    lens[list(empty)] = 0
    lens[list(single)] = 1
    t = int(lens.sum())
    tokens = unit_rows(words[rng.integers(0, nwords, t)] + 0.5 * rng.normal(size=(t, dim)) / np.sqrt(dim))
    index = PlaidIndex.build(tokens, lens, ncentroids=ncentroids, nbits=2, seed=0)
    qrng = rng if query_seed is None else np.random.default_rng(query_seed)
    queries = {lq: unit_rows(words[qrng.integers(0, nwords, lq)] + 0.3 * qrng.normal(size=(lq, dim)) / np.sqrt(dim))
               for lq in qlens}
    return {"index": index, "lengths": lens, "words": words, "queries": queries}
