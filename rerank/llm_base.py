"""The base of every reranker that runs a causal language model (ICR, BlockRank, listwise).

:class:`LLMReranker` owns what they share: one constructor (``Cls(model, tokenizer, *, config, device,
dtype, **options)``), the configuration built from options by :func:`attnsift.config.config_from_options`,
loading by name (:func:`attnsift.rerank.llm.load_causal_lm`) or taking a loaded ``(model, tokenizer)``,
the causal-LM and fast-tokenizer checks, ``model_name``, and the bottom-to-top sliding-window pass of
RankGPT (:func:`slide_windows`) for lists longer than one prompt.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Sequence

from attnsift.rerank.base import BaseReranker


def check_causal_lm(model: Any, who: str = "this reranker") -> None:
    """Raise unless ``model`` is a transformers decoder-only language model.

    Raises
    ------
    TypeError
        ``model`` is not a ``PreTrainedModel``.
    ValueError
        It is one, but not a decoder-only causal LM (e.g. a BERT encoder, even under its LM head).
    """
    try:
        from transformers import PreTrainedModel
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:  # pragma: no cover
        from attnsift.errors import require

        require("transformers", "llm", who)
        raise
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"model must be a transformers PreTrainedModel or a model name, got {type(model).__name__}")
    names = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if type(model).__name__ not in names and not type(model).__name__.endswith("ForCausalLM"):
        raise ValueError(
            f"{type(model).__name__} is not a causal language model; {who} needs a decoder-only LM "
            "(e.g. AutoModelForCausalLM: SmolLM2, Llama, Mistral, Qwen, Gemma)"
        )
    from attnsift.rerank.llm import refusal

    problem = refusal(type(model).__name__, model.config, trust_remote_code=True)
    if problem:
        raise ValueError(problem)


def slide_windows(n: int, window: int, stride: int, reorder: Callable[[list[int]], Sequence[int]]) -> tuple[list[int], int]:
    """RankGPT's sliding windows, from the bottom of a list of ``n`` items to the top.

    Parameters
    ----------
    n : int
        Number of items (positions ``0..n-1`` in the input order).
    window, stride : int
        Window size and step (``1 <= stride < window``).
    reorder : callable
        ``reorder(idx) -> perm``: given the item indices of one window (in the current order), a
        permutation of ``range(len(idx))``, best first.

    Returns
    -------
    (order, windows)
        The final order (item indices, best first) and the number of windows visited. Every item is in
        at least one window; a list of at most ``window`` items is one window.
    """
    order = list(range(n))
    start = max(n - window, 0)
    windows = 0
    while True:
        idx = order[start:start + window]
        perm = list(reorder(idx))
        windows += 1
        order[start:start + window] = [idx[j] for j in perm]
        if start == 0:
            return order, windows
        start = max(start - stride, 0)


def positional_scores(order: Sequence[int]) -> list[float]:
    """Scores ``n - position`` per item (item index order) from a final ``order``: a permutation of 1..n."""
    n = len(order)
    pos = {item: p for p, item in enumerate(order)}
    return [float(n - pos[i]) for i in range(n)]


class LLMReranker(BaseReranker):
    """A reranker over a Hugging Face causal LM (subclasses: ICR, BlockRank, listwise).

    Parameters
    ----------
    model : str or PreTrainedModel
        Alias (``smollm2-135m``, ``gemma3-270m``), folder, .gguf file or hub id (loaded with
        :func:`attnsift.rerank.llm.load_causal_lm`), or a loaded causal LM (then give ``tokenizer``).
    tokenizer : optional
        The loaded model's fast tokenizer (required with a model object; a model given by name loads
        its own, so giving one then is an error).
    config : the subclass's ``config_class``, optional
        A ready configuration; give either it or ``**options``.
    device, dtype : optional
        Where and in which precision to load a model given by name (defaults: CUDA when present;
        float32 on CPU, bfloat16 on CUDA). A loaded model stays where it is: move it yourself.
    **options
        Fields of ``config_class``, strings allowed (``window="10"``), checked by
        :func:`attnsift.config.config_from_options`.
    """

    #: the frozen dataclass of this reranker's options
    config_class: ClassVar[type] = type(None)

    def __init__(self, model: Any = "smollm2-135m", tokenizer: Any = None, *, config: Any = None,
                 device: str | None = None, dtype: Any = None, **options: Any) -> None:
        if isinstance(model, str):
            from attnsift.rerank.llm import check_model_name

            check_model_name(model)  # cheap, before options are parsed or anything loads
        self.config = self._make_config(config, options)
        if isinstance(model, str):
            if tokenizer is not None:
                raise ValueError(f"{type(self).__name__}: tokenizer= goes with a loaded model; a model given by name "
                                 f"({model!r}) loads its own tokenizer")
            from attnsift.rerank.llm import load_causal_lm

            self.model_name = model
            model, tokenizer = load_causal_lm(model, device=device, dtype=dtype)
        else:
            if tokenizer is None:
                raise TypeError(f"a loaded model needs its tokenizer: {type(self).__name__}(model, tokenizer=...)")
            if device is not None or dtype is not None:
                raise ValueError(f"{type(self).__name__}: device= and dtype= apply to a model loaded by name; move a "
                                 "loaded model yourself (model.to(device, dtype)) and leave them unset")
            self.model_name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
        check_causal_lm(model, type(self).__name__)
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{type(self).__name__} needs a fast tokenizer (character offsets give exact document "
                             f"spans), got {type(tokenizer).__name__}")
        self.model, self.tokenizer = model, tokenizer
        text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.num_layers = int(text.num_hidden_layers)
        self.num_heads = int(text.num_attention_heads)

    def _make_config(self, config: Any, options: dict[str, Any]) -> Any:
        from attnsift.config import resolve_config

        return resolve_config(self.config_class, config, options, owner=type(self).__name__)

    @property
    def device(self) -> Any:
        """The device of the model's parameters."""
        return next(self.model.parameters()).device

    def with_options(self, **options: Any) -> "LLMReranker":
        """A sibling reranker with ``options`` changed in its config, sharing the model and tokenizer
        (and whatever subclasses share between siblings, e.g. ICR's mass cache)."""
        from attnsift.config import config_from_options

        return self._sibling(config_from_options(self.config_class, options, base=self.config))

    def _sibling(self, config: Any) -> "LLMReranker":
        other = type(self).__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.config = config
        other._configure()
        return other

    def _configure(self) -> None:
        """Derive what depends on ``self.config`` (called by subclasses' constructors and by :meth:`with_options`)."""
