"""The cross-encoder baseline: a sentence-transformers ``CrossEncoder`` scores each (query, document) pair.

This is the reranker users compare attention-based reranking with (``cross-encoder/ms-marco-MiniLM-L6-v2``
and its kin): one forward pass of a sequence-classification model per pair, no language model. It runs
like every other reranker (``rerank --reranker cross-encoder --model PATH``, ``search``, bench specs
``bm25+cross-encoder:PATH[depth=20]``) and reports its seconds per query the same way.

attnsift ships no cross-encoder, so a model must be named: a local folder (a sentence-transformers
cross-encoder or any transformers ``*ForSequenceClassification`` checkpoint), or a hub id in the local
Hugging Face cache (online, a hub id ``org/name`` not in the cache is downloaded when it loads).
:func:`check_cross_encoder_name` checks the name before anything loads.

Scores are the model's raw logits (no sigmoid: it saturates, and a tie would be broken by doc id rather
than by the model). A two-label model scores ``logit[1] - logit[0]`` (the log-odds of "relevant", as
monoBERT-style checkpoints are trained). Pairs longer than ``max_length`` tokens are cut by the tokenizer
(the document's end goes first); the cut documents are counted and reported like every reranker's
(``reranker.truncation``, one warning per run).
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnsift.config import Config
from attnsift.fingerprint import cached_hub_snapshot, hub_offline
from attnsift.rerank.base import BaseReranker
from attnsift.types import Ranking

log = logging.getLogger(__name__)

__all__ = ["CrossEncoderConfig", "CrossEncoderReranker", "check_cross_encoder_name", "EXAMPLE_MODEL"]

#: a widely used cross-encoder, named in messages (not bundled: fetch it with `hf download` first)
EXAMPLE_MODEL = "cross-encoder/ms-marco-MiniLM-L6-v2"
_HUB_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")
_ST_FILES = ("config_sentence_transformers.json", "modules.json")
EXPECTED = (f"a cross-encoder: a local model folder with config.json (a sentence-transformers CrossEncoder or a "
            f"*ForSequenceClassification checkpoint), or a hub id in the local Hugging Face cache (e.g. {EXAMPLE_MODEL}, "
            "fetched first with `hf download`)")


def _classifier_problem(folder: Path) -> str | None:
    """Why the model in ``folder`` is not a cross-encoder (None when it is, or cannot be told from its files)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "a folder whose config.json cannot be read as JSON"
    if not isinstance(config, dict):
        return "a folder whose config.json is not a JSON object"
    if any((folder / f).is_file() for f in _ST_FILES):
        return None  # a sentence-transformers folder: its own files say how it scores
    archs = config.get("architectures") or []
    if archs and not any(str(a).endswith("ForSequenceClassification") for a in archs):
        return f"a {', '.join(map(str, archs))} model, not a sequence-classification model"
    return None


def check_cross_encoder_name(name: str) -> None:
    """Check that ``name`` names a cross-encoder on this machine, without loading anything.

    Accepted: an existing folder with ``config.json`` whose architecture is a sequence classifier (or a
    sentence-transformers folder), or a hub id ``org/name`` in the local Hugging Face cache. Online
    (``HF_HUB_OFFLINE`` unset), a hub id not in the cache passes: it is downloaded when it loads.

    Raises
    ------
    TypeError
        ``name`` is not a non-empty string.
    ValueError
        One line naming what was given and what is accepted: a path that does not exist, a file, a folder
        without config.json, a model of another kind (a causal LM, an embedding model), or a hub id not in
        the local cache while offline.
    """
    if not isinstance(name, (str, Path)) or not str(name).strip():
        raise TypeError(f"a cross-encoder model must be a non-empty string (a folder or a hub id), got {name!r}")
    name = str(name)
    path = Path(name).expanduser()
    if path.is_file():
        raise ValueError(f"cross-encoder {name!r} is a file, not a model folder; expected {EXPECTED}")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"cross-encoder folder {name!r} has no config.json; expected {EXPECTED}")
        problem = _classifier_problem(path)
        if problem:
            raise ValueError(f"{name!r} is {problem}; the cross-encoder reranker needs {EXPECTED}")
        return
    looks_like_path = name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") != 1
    if looks_like_path or not _HUB_ID.match(name):
        raise ValueError(f"cross-encoder {name!r} does not exist (no such folder, and not an org/name hub id); "
                         f"expected {EXPECTED}")
    snapshot = cached_hub_snapshot(name)
    if snapshot is not None:
        problem = _classifier_problem(snapshot)
        if problem:
            raise ValueError(f"{name!r} is {problem}; the cross-encoder reranker needs {EXPECTED}")
        return
    if not hub_offline():
        log.info("cross-encoder %s is not in the local Hugging Face cache; it will be downloaded", name)
        return
    raise ValueError(f"cross-encoder {name!r} is not in the local Hugging Face cache and the hub is offline "
                     f"(HF_HUB_OFFLINE); fetch it first with `hf download {name}`, or give a local folder")


def _location(name: str) -> str:
    """What ``CrossEncoder`` loads: the folder, the cached snapshot of a hub id, or the hub id itself."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    snapshot = cached_hub_snapshot(name)
    return str(snapshot) if snapshot is not None else name


@dataclass(frozen=True)
class CrossEncoderConfig(Config):
    """Options of :class:`CrossEncoderReranker`.

    Attributes
    ----------
    batch_size : int
        Pairs per forward pass [32] (the scores do not depend on it beyond float rounding).
    max_length : int or None
        Tokens per (query, document) pair; longer pairs are cut (counted, logged once). None: the
        model's own limit (its ``max_seq_length``, else its tokenizer's ``model_max_length``).
    title : bool
        Put the document's title before its text (``"{title} {text}"``) [true], as BEIR evaluations do.
    """

    batch_size: int = 32
    max_length: int | None = None
    title: bool = True

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size}")
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"max_length must be an integer >= 8 (tokens per query-document pair) or none, "
                             f"got {self.max_length}")


class CrossEncoderReranker(BaseReranker):
    """Rerank with a sentence-transformers ``CrossEncoder``: one score per (query, document) pair.

    Parameters
    ----------
    model : str, Path or sentence_transformers.CrossEncoder
        A local folder or a hub id in the local cache (checked by :func:`check_cross_encoder_name` before
        anything loads), or a loaded ``CrossEncoder`` (it stays where it is).
    config : CrossEncoderConfig, optional
        A ready configuration; give either it or ``**options``.
    device : str or torch.device, optional
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (default: CUDA when available), see
        :func:`attnsift.config.resolve_device`.
    dtype : str or torch.dtype, optional
        Precision of the weights (default float32, also on CUDA: ``bfloat16`` / ``float16`` halve the cost there).
    **options
        :class:`CrossEncoderConfig` fields, strings allowed (``batch_size="16"``, ``max_length=512``).

    Attributes
    ----------
    model_name : str
        The name the model was given by.
    max_length : int or None
        Tokens per pair in effect (the option, else the model's limit).
    truncation : dict
        The documents cut to fit ``max_length`` so far (:attr:`attnsift.rerank.base.BaseReranker.truncation`).

    Raises
    ------
    ValueError
        A model that does not exist, is not a cross-encoder, or has more than two labels; an unknown option.
    """

    name = "cross-encoder"
    config_class = CrossEncoderConfig
    truncation_hint = "--option max_length= (tokens per query-document pair, up to the model's limit) changes this"

    def __init__(self, model: Any, *, config: CrossEncoderConfig | None = None, device: Any = None,
                 dtype: Any = None, **options: Any) -> None:
        from attnsift.config import resolve_config

        if model is None:
            raise ValueError(f"the cross-encoder reranker needs a model: attnsift ships none; give a folder or a hub id "
                             f"in the local cache (e.g. --model {EXAMPLE_MODEL} after `hf download {EXAMPLE_MODEL}`)")
        if isinstance(model, (str, Path)):
            check_cross_encoder_name(model)  # cheap, before options are parsed or anything loads
        self.config = resolve_config(CrossEncoderConfig, config, options, owner=type(self).__name__)
        if isinstance(model, (str, Path)):
            self.model_name = str(model)
            self.model = _load(self.model_name, device, dtype)
        else:
            _require_sentence_transformers()
            from sentence_transformers import CrossEncoder

            if not isinstance(model, CrossEncoder):
                raise TypeError(f"model must be a folder, a hub id or a sentence_transformers.CrossEncoder, "
                                f"got {type(model).__name__}")
            if device is not None or dtype is not None:
                raise ValueError("CrossEncoderReranker: device= and dtype= apply to a model loaded by name; move a "
                                 "loaded CrossEncoder yourself (ce.to(device)) and leave them unset")
            self.model_name = str(getattr(model, "model_card_data", None) and model.model_card_data.base_model
                                  or getattr(getattr(model, "config", None), "_name_or_path", "") or "cross-encoder")
            self.model = model
        labels = int(getattr(self.model, "num_labels", 1) or 1)
        if labels > 2:
            raise ValueError(f"{self.model_name!r} predicts {labels} labels; a reranking cross-encoder predicts one "
                             "relevance score (or two labels: not relevant, relevant)")
        self.num_labels = labels
        limit = self.config.max_length or _model_limit(self.model)
        self.max_length = int(limit) if limit else None

    @property
    def device(self) -> Any:
        """The device of the model's parameters."""
        return next(self.model.parameters()).device

    def with_options(self, **options: Any) -> "CrossEncoderReranker":
        """A sibling reranker with ``options`` changed in its config, sharing the loaded model."""
        from attnsift.config import config_from_options

        other = type(self).__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.config = config_from_options(CrossEncoderConfig, options, base=self.config)
        other.max_length = other.config.max_length or _model_limit(self.model)
        return other

    def _text(self, candidate: Any) -> str:
        doc = candidate.document
        if self.config.title and doc.title:
            return f"{doc.title} {doc.text}"
        return doc.text

    def _pair_cuts(self, ranking: Ranking, pairs: list[tuple[str, str]]) -> list[Any] | None:
        """One :class:`~attnsift.rerank.base.DocumentCut` per pair: the document's tokens and how many of them
        fit ``max_length`` beside the query (the tokenizer cuts the longer text of a pair first)."""
        from attnsift.rerank import base

        if self.max_length is None or not hasattr(base, "DocumentCut"):
            return None
        tok = self.model.tokenizer
        specials = tok.num_special_tokens_to_add(pair=True)
        q_len = len(tok(ranking.query.text, add_special_tokens=False)["input_ids"])
        d_lens = [len(ids) for ids in tok([d for _, d in pairs], add_special_tokens=False)["input_ids"]]
        cuts = []
        for (_, text), d in zip(pairs, d_lens):
            room = self.max_length - specials - q_len
            kept = d if d <= room else max(room, (self.max_length - specials) // 2, 0)
            n = len(text.split())
            cuts.append(base.DocumentCut(n, n, d, min(d, kept)))
        return cuts

    def score(self, ranking: Ranking) -> list[float]:
        """One score per candidate of ``ranking`` (its order): the model's logit for the pair."""
        import torch

        if len(ranking) == 0:
            return []
        pairs = [(ranking.query.text, self._text(c)) for c in ranking.candidates]
        cuts = self._pair_cuts(ranking, pairs)
        if cuts is not None and hasattr(self, "_remember_cuts"):
            self._remember_cuts(ranking, cuts, token_limit=self.max_length)  # counted and reported by the base
        kwargs = {"max_length": self.max_length} if self.config.max_length is not None else {}
        with torch.inference_mode():
            out = self.model.predict(pairs, batch_size=self.config.batch_size, show_progress_bar=False,
                                     activation_fn=torch.nn.Identity(), convert_to_tensor=True, **kwargs)
        out = out.float().cpu()
        if out.ndim == 2 and out.shape[1] == 2:
            out = out[:, 1] - out[:, 0]
        return [float(v) for v in out.reshape(len(pairs))]


def _require_sentence_transformers() -> None:
    from attnsift.errors import require

    require("sentence_transformers", "dense", "the cross-encoder reranker")


def _model_limit(model: Any) -> int | None:
    for value in (getattr(model, "max_seq_length", None), getattr(getattr(model, "tokenizer", None), "model_max_length", None)):
        if isinstance(value, int) and 0 < value < 1_000_000:  # tokenizers without a limit say 1e30
            return value
    return None


def _load(name: str, device: Any, dtype: Any) -> Any:
    """Load the cross-encoder ``name`` on ``device`` in ``dtype`` (quietly: no third-party progress bars)."""
    from attnsift.config import resolve_device, resolve_dtype
    from attnsift.progress import quiet_third_party

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev, accelerator_default="float32")
    _require_sentence_transformers()
    from sentence_transformers import CrossEncoder

    location = _location(name)
    quiet_third_party()
    try:
        model = CrossEncoder(location, device=str(dev), local_files_only=hub_offline() or Path(location).is_dir())
    except OSError as exc:
        raise ValueError(f"cross-encoder {name!r} could not be loaded ({str(exc).splitlines()[0][:160]}); expected "
                         f"{EXPECTED}") from None
    model.to(dt)
    model.eval()
    return model
