"""System specs: one short string names a first stage and an optional reranker, with their options.

Grammar (whitespace ignored)::

    spec     := stage [ "+" stage ]
    stage    := name [ ":" model ] [ "[" key=value { ";" key=value } "]" ]

The first stage is ``bm25``, ``dense``, ``late``, ``hybrid`` or ``run:NAME`` (a run the data set provides,
e.g. ``run:bm25`` on DL19; a data set that provides a run named like the first stage uses it, see
:func:`attnsift.pipeline.first_stage`). The reranker is ``icr``, ``listwise``, ``blockrank``,
``cross-encoder`` (which names its model: ``cross-encoder:PATH``, a folder or a cached hub id) or ``none``.
Two options belong to the :class:`~attnsift.pipeline.Pipeline` rather than to a stage, with the
Pipeline's names: ``first_stage_k`` (default 100) and ``depth`` (how many candidates the reranker
rescores; default 20 here, or ``first_stage_k`` when that is smaller); they may appear in either
stage's brackets. ``depth`` above ``first_stage_k``, or without a reranker, is an error.

A dense, late or hybrid first stage names its encoder as ``dense:minilm`` or ``dense[encoder=minilm]``
(the same spec; ``model=`` in the brackets still works for one release, with a deprecation warning).

Examples::

    bm25
    dense:minilm
    hybrid[encoder=minilm]
    bm25+icr:smollm2-135m
    bm25+icr:smollm2-135m[calibration=none;depth=50]
    run:bm25+icr[span=last_token]
    bm25+cross-encoder:cross-encoder/ms-marco-MiniLM-L6-v2[depth=20]

The same spec string works in the CLI (``attnsift bench quality --systems ...``), in Python
(:meth:`SystemSpec.parse`) and as the row label of the results table.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from attnsift.bench.stages import ENCODER_STAGES, default_encoder
from attnsift.config import _coerce
from attnsift.pipeline import DEFAULT_FIRST_STAGE_K, check_cuts

# The benchmark's default depth: the figures recorded so far rerank BM25's top 20.
DEFAULT_DEPTH = 20
PIPELINE_OPTIONS = ("depth", "first_stage_k")
RENAMED_OPTIONS = {"top_k": "depth"}


def split_specs(text: str) -> list[str]:
    """Split a comma-separated list of specs, ignoring commas inside brackets."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in {text!r}")
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise ValueError(f"unbalanced '[' in {text!r}")
    out.append("".join(cur).strip())
    items = [s for s in out if s]
    if not items:
        raise ValueError("no system given; e.g. --systems bm25,bm25+icr:smollm2-135m")
    return items


@dataclass(frozen=True)
class StageSpec:
    name: str
    model: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        s = self.name + (f":{self.model}" if self.model else "")
        if self.options:
            s += "[" + ";".join(f"{k}={v}" for k, v in self.options) + "]"
        return s


def _parse_stage(text: str, whole: str) -> StageSpec:
    text = text.strip()
    # `run:NAME` is a first stage whose "model" slot is the run name.
    m = re.match(r"^(?P<base>[\w\-]+)(?::(?P<model>[^\[\]]+))?(?:\[(?P<opts>[^\[\]]*)\])?$", text)
    if not m:
        raise ValueError(f"cannot parse stage {text!r} of system spec {whole!r}; expected name[:model][key=value;...]")
    opts = []
    if m.group("opts"):
        for item in m.group("opts").split(";"):
            item = item.strip()
            if not item:
                continue
            if "=" not in item:
                raise ValueError(f"option {item!r} in {whole!r} is not key=value")
            k, v = item.split("=", 1)
            opts.append((k.strip().replace("-", "_"), v.strip()))
    return StageSpec(m.group("base"), (m.group("model") or None), tuple(sorted(opts)))


def _encoder_into_slot(first: StageSpec, whole: str) -> StageSpec:
    """``dense[encoder=X]`` (or the deprecated ``dense[model=X]``) is ``dense:X``: the encoder lives in the
    stage's model slot, so both spellings give one label, one folder and one key."""
    from attnsift.errors import deprecated

    opts = dict(first.options)
    given = [k for k in ("encoder", "model") if k in opts]
    if not given:
        return first
    if first.name not in ENCODER_STAGES:
        raise ValueError(f"first stage {first.name!r} runs no encoder; drop {given[0]}= from {whole!r}")
    if "model" in opts:
        deprecated(f"the spec key model= of a {first.name} first stage ({whole!r})", "encoder=", stacklevel=4)
    names = {opts.pop(k) for k in given} | ({first.model} if first.model else set())
    if len(names) > 1:
        raise ValueError(f"{whole!r} names two encoders ({', '.join(sorted(names))}); give one, e.g. "
                         f"{first.name}[encoder={sorted(names)[0]}]")
    return StageSpec(first.name, names.pop(), tuple(sorted(opts.items())))


@dataclass(frozen=True)
class SystemSpec:
    """A parsed system: first stage, optional reranker, and the pipeline cut-offs.

    ``depth`` is None exactly when there is no reranker.
    """

    first: StageSpec
    reranker: StageSpec | None = None
    depth: int | None = None
    first_stage_k: int = DEFAULT_FIRST_STAGE_K
    text: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: str) -> "SystemSpec":
        from attnsift.registry import HYBRID, RERANKERS, RETRIEVERS

        whole = text.strip()
        if not whole:
            raise ValueError("empty system spec; e.g. bm25 or bm25+icr:smollm2-135m")
        nesting, parts, cur = 0, [], []
        for ch in whole:  # split on '+' outside brackets
            nesting += ch == "["
            nesting -= ch == "]"
            if ch == "+" and nesting == 0:
                parts.append("".join(cur))
                cur = []
            else:
                cur.append(ch)
        parts.append("".join(cur))
        if len(parts) > 2:
            raise ValueError(f"system spec {whole!r} has {len(parts)} stages; give a first stage and at most one reranker")
        first = _parse_stage(parts[0], whole)
        known_first = set(RETRIEVERS) | {HYBRID, "run"}
        if first.name not in known_first:
            raise ValueError(f"unknown first stage {first.name!r} in {whole!r}; choose one of {', '.join(sorted(known_first))}")
        if first.name == "run" and not first.model:
            raise ValueError(f"'run' needs the name of a provided run, e.g. run:bm25 (in {whole!r})")
        reranker = _parse_stage(parts[1], whole) if len(parts) == 2 else None
        if reranker is not None and reranker.name not in RERANKERS:
            raise ValueError(f"unknown reranker {reranker.name!r} in {whole!r}; choose one of {', '.join(sorted(RERANKERS))}")
        pipe: dict[str, int] = {}
        stages = []
        for st in (first, reranker):
            if st is None:
                stages.append(None)
                continue
            kept = []
            for k, v in st.options:
                if k in RENAMED_OPTIONS:
                    raise ValueError(f"option {k}={v} in {whole!r} is now called {RENAMED_OPTIONS[k]}: "
                                     f"write {RENAMED_OPTIONS[k]}={v}")
                if k in PIPELINE_OPTIONS:
                    if k in pipe:
                        raise ValueError(f"{k} is given twice in {whole!r}; give it once")
                    pipe[k] = _coerce(v, int, k)
                else:
                    kept.append((k, v))
            stages.append(StageSpec(st.name, st.model, tuple(kept)))
        first, reranker = stages
        first = _encoder_into_slot(first, whole)
        if reranker is not None and reranker.name == "none":
            reranker = None
        first_stage_k = pipe.get("first_stage_k", DEFAULT_FIRST_STAGE_K)
        depth = pipe.get("depth")
        if depth is None and reranker is not None:
            depth = min(DEFAULT_DEPTH, max(first_stage_k, 1))
        try:
            check_cuts(first_stage_k, depth, reranked=reranker is not None)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{exc} (in {whole!r})") from None
        return cls(first, reranker, depth=depth, first_stage_k=first_stage_k, text=whole)

    @property
    def label(self) -> str:
        """Canonical text of the spec (stable across option order), used as the table row label."""
        s = str(self.first)
        if self.reranker is not None:
            s += "+" + str(self.reranker)
            if self.depth not in (None, DEFAULT_DEPTH):
                s += f"@{self.depth}"
        if self.first_stage_k != DEFAULT_FIRST_STAGE_K:
            s += f"/{self.first_stage_k}"
        return s

    @property
    def slug(self) -> str:
        """A file-system-safe name for this system's output folder."""
        return re.sub(r"[^A-Za-z0-9_.\-]+", "_", self.label).strip("_")

    @property
    def encoder(self) -> str | None:
        """The first stage's encoder (its default when the spec names none); None for BM25 and runs."""
        if self.first.name not in ENCODER_STAGES:
            return None
        return self.first.model or default_encoder(self.first.name)

    def to_dict(self) -> dict[str, Any]:
        first = {"name": self.first.name, "model": self.first.model, "options": dict(self.first.options)}
        if self.encoder is not None:  # part of every result's key: results are keyed by what made them
            first["encoder"] = self.encoder
        return {
            "spec": self.label,
            "first_stage": first,
            "reranker": None if self.reranker is None else {
                "name": self.reranker.name, "model": self.reranker.model, "options": dict(self.reranker.options)},
            "depth": self.depth,
            "first_stage_k": self.first_stage_k,
        }
