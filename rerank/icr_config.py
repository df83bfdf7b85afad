"""The options of the ICR reranker: one frozen dataclass, every check and contradiction in one place.

Build it from loose options (CLI strings included) with :func:`attnsift.config.config_from_options`
(what ``ICRReranker(**options)`` does): unknown keys are rejected there with the accepted ones listed;
values and contradictions are checked in :meth:`ICRConfig.__post_init__`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attnsift.config import Config
from attnsift.rerank.head_scoring import is_profile, parse_heads

CALIBRATIONS = ("masked_na", "na", "none")
FUSION_OPTIONS = ("none", "interp", "rrf", "profile")
SPANS = ("span_mean", "last_token")
INSTRUCTIONS = ("ie", "qa")
IMPLS = ("auto", "reference", "triton")
PASSAGES = ("none", "max")
NA_QUERY = "N/A"

_DEFAULT_CALIBRATION = "masked_na"
_DEFAULT_FUSION_WEIGHT = 0.5
_DEFAULT_MAX_WORDS = 300
_DEFAULT_PASSAGE_WORDS = 150
_DEFAULT_PASSAGE_STRIDE = 75


def _check_int(name: str, v: Any, low: int | None, none_ok: bool) -> None:
    if v is None and none_ok:
        return
    if isinstance(v, bool) or not isinstance(v, int) or (low is not None and v < low):
        what = "an integer" if low is None else f"an integer >= {low}"
        raise ValueError(f"{name} must be {what}{' or None' if none_ok else ''}, got {v!r}")


def _check_choice(name: str, v: Any, choices: tuple[str, ...]) -> None:
    if v not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {v!r}")


@dataclass(frozen=True)
class ICRConfig(Config):
    """Options of :class:`~attnsift.rerank.icr.ICRReranker`.

    Attributes
    ----------
    calibration : "masked_na" | "na" | "none"
        ``none``: raw query mass; ``na``: query mass minus the content-free "N/A" query's mass;
        ``masked_na`` [default]: the same with the 2-sigma token mask (METHODS.md section 1).
        Not used with a head profile (the profile sets it per head): giving another value then is an error.
    max_words : int or None
        Whitespace words kept per document [300]; longer documents are cut (counted in
        ``reranker.truncation`` and reported once per run). Not used with ``passages=max``.
    max_doc_tokens : int or None
        Tokens kept per document (per passage with ``passages=max``) after the word cut (None: no cut).
    passages : "none" | "max"
        ``max``: nothing is cut by words; a document longer than ``passage_words`` is split into
        windows of ``passage_words`` words every ``passage_stride`` words, each window is scored as a
        candidate of its own (in the same prompt, or in sliding-window prompts when they do not fit
        ``max_context_tokens``), and the document takes its best window's attention score (MaxP);
        fusion then uses the document's first-stage score ["none": documents cut to ``max_words``].
    passage_words, passage_stride : int
        Window length and step in words, ``1 <= passage_stride <= passage_words`` [150, 75]; only
        with ``passages=max``.
    instruction : "ie" | "qa"
        Late instruction: retrieval-style ("ie") or question answering ("qa").
    start_layer, end_layer : int or None
        Inclusive layer range summed (None: first / last). The forward pass stops after ``end_layer``.
        Negative values count from the end (-1 = last layer). Not with ``heads``.
    span : "span_mean" | "last_token"
        Mean over all query-span rows, or the last prompt token only.
    heads : (layer, head) pairs, "auto", a profile path, or None
        Sum only these heads (None: all heads of the selected layers); ``"10:3,12:0"`` as a string.
        ``"auto"`` or a ``.json`` head profile (``attnsift analyze heads``): score from the profile's
        heads, per-head calibration and combination. Layers after the last selected one are not run.
    fusion : "none" | "interp" | "rrf" | "profile"
        Fuse the attention scores with the first-stage scores (min-max interpolation or reciprocal
        rank fusion); ``"profile"`` takes method and weight from the head profile.
    fusion_weight : float
        The attention scores' share in an ``interp`` / ``rrf`` fusion, in [0, 1] [0.5].
    orders : 1 or 2
        2 scores the list a second time in the opposite prompt order and averages the two
        (standardised) score vectors: position debiasing at the cost of a second pass.
    window, stride : int
        Sliding windows for lists that do not fit ``max_context_tokens`` [20, 10].
    max_context_tokens : int or None
        Token budget of one prompt (None: the model's ``max_position_embeddings``).
    reverse : bool
        Reverse first-stage order in the prompt (top-1 nearest the query) [True].
    impl : "auto" | "reference" | "triton"
        The ``segment_mass`` kernel that computes the attention mass (auto: Triton on CUDA, else the
        PyTorch reference).
    """

    calibration: str = _DEFAULT_CALIBRATION
    max_words: int | None = _DEFAULT_MAX_WORDS
    max_doc_tokens: int | None = None
    passages: str = "none"
    passage_words: int = _DEFAULT_PASSAGE_WORDS
    passage_stride: int = _DEFAULT_PASSAGE_STRIDE
    instruction: str = "ie"
    start_layer: int | None = None
    end_layer: int | None = None
    span: str = "span_mean"
    heads: tuple[tuple[int, int], ...] | str | None = None
    window: int = 20
    stride: int = 10
    max_context_tokens: int | None = None
    reverse: bool = True
    fusion: str = "none"
    fusion_weight: float = _DEFAULT_FUSION_WEIGHT
    orders: int = 1
    impl: str = "auto"

    def validate(self) -> None:
        _check_choice("calibration", self.calibration, CALIBRATIONS)
        _check_choice("span", self.span, SPANS)
        _check_choice("instruction", self.instruction, INSTRUCTIONS)
        _check_choice("fusion", self.fusion, FUSION_OPTIONS)
        _check_choice("impl", self.impl, IMPLS)
        _check_choice("passages", self.passages, PASSAGES)
        _check_int("passage_words", self.passage_words, 1, none_ok=False)
        _check_int("passage_stride", self.passage_stride, 1, none_ok=False)
        for name in ("max_words", "max_doc_tokens", "max_context_tokens"):
            _check_int(name, getattr(self, name), 1, none_ok=True)
        for name in ("start_layer", "end_layer"):
            _check_int(name, getattr(self, name), None, none_ok=True)
        _check_int("window", self.window, 2, none_ok=False)
        _check_int("stride", self.stride, 1, none_ok=False)
        if self.orders not in (1, 2) or isinstance(self.orders, bool):
            raise ValueError(f"orders must be 1 or 2, got {self.orders!r}")
        if not isinstance(self.reverse, bool):
            raise ValueError(f"reverse must be true or false, got {self.reverse!r}")
        w = self.fusion_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= float(w) <= 1.0:
            raise ValueError(f"fusion_weight must be a number in [0, 1], got {w!r}")
        object.__setattr__(self, "heads", parse_heads(self.heads))
        self._check_contradictions()

    def _check_contradictions(self) -> None:
        self._check_passages()
        if self.stride >= self.window:
            raise ValueError(f"stride must be smaller than window (windows must overlap), got stride={self.stride} "
                             f"with window={self.window}")
        s, e = self.start_layer, self.end_layer
        if s is not None and e is not None and (s < 0) == (e < 0) and s > e:
            raise ValueError(f"start_layer={s} is after end_layer={e}; give start_layer <= end_layer")
        if self.heads is not None and (s is not None or e is not None):
            raise ValueError(f"heads={self.heads!r} selects the layers itself: leave start_layer / end_layer unset")
        if is_profile(self.heads) and self.calibration != _DEFAULT_CALIBRATION:
            raise ValueError(f"calibration={self.calibration} is not used with heads={self.heads}: the head profile "
                             "sets each head's calibration. Drop calibration= or drop heads=")
        if self.fusion == "profile" and not is_profile(self.heads):
            raise ValueError("fusion=profile takes its weight from a head profile: also give heads=auto or "
                             "heads=<profile.json>, or use fusion=interp / rrf with fusion_weight=")
        if self.fusion in ("none", "profile") and float(self.fusion_weight) != _DEFAULT_FUSION_WEIGHT:
            raise ValueError(f"fusion_weight={self.fusion_weight} is not used with fusion={self.fusion}; "
                             "give fusion=interp or fusion=rrf with it, or drop fusion_weight=")

    def _check_passages(self) -> None:
        changed = [f"{n}={getattr(self, n)}" for n, d in (("passage_words", _DEFAULT_PASSAGE_WORDS),
                                                         ("passage_stride", _DEFAULT_PASSAGE_STRIDE))
                   if getattr(self, n) != d]
        if self.passages == "none" and changed:
            raise ValueError(f"{', '.join(changed)} is only used with passages=max; add passages=max or drop it")
        if self.passages == "max":
            if self.max_words not in (_DEFAULT_MAX_WORDS, None):
                raise ValueError(f"max_words={self.max_words} is not used with passages=max (documents are split into "
                                 "passages of passage_words, not cut); drop max_words= or use passages=none")
            if self.passage_stride > self.passage_words:
                raise ValueError(f"passage_stride={self.passage_stride} skips words between passages of "
                                 f"passage_words={self.passage_words}; give passage_stride <= passage_words")

    @property
    def mass_key(self) -> tuple:
        """The fields that shape the forward passes (the rest only pick among the computed masses).

        The layers and heads are not in it: the reranker adds the resolved selection."""
        return (self.max_words, self.max_doc_tokens, self.instruction, self.span, self.window, self.stride,
                self.max_context_tokens, self.reverse, self.impl, self.passages, self.passage_words,
                self.passage_stride)
