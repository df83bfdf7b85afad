"""Progress on stderr: one line per long step, the same in every mode.

Every long step of the library (indexing, encoding, reranking, head analysis, training) reports through
:func:`bar` (a counted loop) or :func:`step` (one block of work), so there is one switch for all of them:

- the CLI calls :func:`configure` with ``True`` (``--quiet``: ``False``): progress shows in every mode,
  ``--json`` included (it goes to stderr; stdout keeps the JSON);
- in Python the default is on when stderr is a terminal and off otherwise (a notebook or a log file
  gets no bar characters); ``progress=True/False`` on a call overrides both.

On a terminal a counted loop is a tqdm bar on one line; elsewhere (a log, a pipe) it prints a line when
it starts, at most one every :data:`LOG_INTERVAL_S` seconds, and one when it ends, so a log shows that
work is moving without carriage-return noise. :func:`quiet_third_party` folds away the bars and log
chatter of transformers, huggingface_hub and bm25s, which would otherwise clutter stderr.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator

__all__ = ["configure", "is_enabled", "bar", "step", "notice", "quiet_third_party", "format_seconds", "Estimator",
           "silence_tqdm_in"]

#: In line mode (stderr not a terminal), at most one progress line per this many seconds.
LOG_INTERVAL_S = 30.0

_configured: bool | None = None


def configure(enabled: bool | None) -> None:
    """Set progress reporting for the whole process: True (on, the CLI's default), False (``--quiet``)
    or None (automatic: on when stderr is a terminal)."""
    global _configured
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True, False or None, got {enabled!r}")
    _configured = enabled


def is_enabled(progress: bool | None = None) -> bool:
    """Whether to report progress: ``progress`` when given, else :func:`configure`'s setting, else
    whether stderr is a terminal."""
    if progress is not None:
        return bool(progress)
    if _configured is not None:
        return _configured
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def format_seconds(seconds: float) -> str:
    """``40 ms``, ``4.2 s``, ``42 s``, ``3.5 min``, ``2.1 h``."""
    if seconds < 0.095:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _emit(line: str) -> None:
    """Print one line on stderr; on a terminal with a tqdm bar showing, above the bar (``tqdm.write``),
    so the line does not run into it."""
    tqdm_mod = sys.modules.get("tqdm")
    if tqdm_mod is not None and getattr(tqdm_mod.tqdm, "_instances", None):
        try:
            if sys.stderr.isatty():
                tqdm_mod.tqdm.write(line, file=sys.stderr)
                return
        except (AttributeError, ValueError):
            pass
    print(line, file=sys.stderr, flush=True)


def notice(message: str, progress: bool | None = None) -> None:
    """One line on stderr when progress is enabled."""
    if is_enabled(progress):
        _emit(message)


#: Whole-line counts read as words: "5183 docs", not tqdm's "5183 doc".
_PLURAL = {"doc": "docs", "q": "queries", "query": "queries", "text": "texts", "step": "steps", "chunk": "chunks",
           "it": "items"}


class _LineBar:
    """A tqdm-like counter that prints whole lines: at the start, every LOG_INTERVAL_S, at the end."""

    def __init__(self, iterable: Iterable[Any] | None, total: int | None, desc: str, unit: str) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self.t0 = self.last = time.perf_counter()
        self.closed = False
        of = f" {total} {_PLURAL.get(unit, unit)}" if total is not None else ""
        print(f"{desc}:{of} ...", file=sys.stderr, flush=True)

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "_LineBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _line(self, final: bool) -> str:
        spent = time.perf_counter() - self.t0
        of = f"/{self.total}" if self.total is not None else ""
        line = f"{self.desc}: {self.n}{of} {_PLURAL.get(self.unit, self.unit)} in {format_seconds(spent)}"
        if not final and self.total and self.n:
            left = spent / self.n * (self.total - self.n)
            line += f", about {format_seconds(left)} left"
        return line

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= LOG_INTERVAL_S and not (self.total is not None and self.n >= self.total):
            self.last = now
            print(self._line(False), file=sys.stderr, flush=True)

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:  # tqdm compatibility
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            print(self._line(True), file=sys.stderr, flush=True)


class _NoBar:
    def __init__(self, iterable: Iterable[Any] | None) -> None:
        self.iterable = iterable
        self.n = 0

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterable or ())

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def bar(iterable: Iterable[Any] | None = None, *, desc: str, total: int | None = None, unit: str = "it",
        progress: bool | None = None, initial: int = 0) -> Any:
    """A progress counter over ``iterable`` (or a manual one: ``update(n)``, ``close()``).

    On a terminal a tqdm bar; otherwise whole lines (start, every :data:`LOG_INTERVAL_S`, end); nothing
    when progress is disabled (:func:`is_enabled`). Usable as an iterable and as a context manager.
    """
    if not is_enabled(progress):
        return _NoBar(iterable)
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr, dynamic_ncols=True)
    out = _LineBar(iterable, total, desc, unit)
    out.n = initial
    return out


@contextlib.contextmanager
def step(desc: str, progress: bool | None = None) -> Iterator[None]:
    """One block of long work: ``desc ...`` when it starts, ``desc: done in 12 s`` when it ends."""
    if not is_enabled(progress):
        yield
        return
    _emit(f"{desc} ...")
    t0 = time.perf_counter()
    yield
    _emit(f"{desc}: done in {format_seconds(time.perf_counter() - t0)}")


def _singular(what: str) -> str:
    if what.endswith("ies"):
        return what[:-3] + "y"
    if what.endswith(("ses", "xes")):
        return what[:-2]
    return what[:-1] if what.endswith("s") and not what.endswith("ss") else what


class Estimator:
    """One line with the projected time of a long loop, from a quick measured sample.

    Feed it each item's seconds with :meth:`observe`. Once the sample is measured (the first items,
    until about ``sample_s`` seconds or ``max_sample`` items), it projects ``total`` items and, when that
    exceeds ``threshold_s``, prints ONE line on stderr (when progress is enabled, :func:`is_enabled`)::

        estimate: about 48 min for 300 queries (9.6 s per query measured on the first 1, device cpu); --max-queries, --depth or --option max_words= shorten it

    It never prints again afterwards; a short run prints nothing.

    Parameters
    ----------
    total : int
        How many items the whole loop has (>= 0).
    what : str
        The items, plural (``"queries"``, ``"documents"``, ``"steps"``); "per <singular>" in the line.
    hint : str
        What shortens the run, appended after ``"; "`` (e.g. the options to lower).
    threshold_s : float
        Print only when the projection exceeds this many seconds.
    progress : bool, optional
        See :func:`is_enabled`.
    device : str, optional
        Where the work runs (``"cpu"``, ``"cuda:0"``), named in the line.
    sample_s : float
        Measure items until this many seconds were measured ...
    max_sample : int
        ... or this many items were (fast items: the projection is then cheap and reliable).

    Examples
    --------
    >>> est = Estimator(300, "queries", hint="--depth shortens it", device="cpu")
    >>> for q in queries:
    ...     t0 = time.perf_counter(); work(q); est.observe(time.perf_counter() - t0)
    """

    def __init__(self, total: int, what: str = "queries", hint: str = "", threshold_s: float = 60.0,
                 progress: bool | None = None, *, device: str | None = None, sample_s: float = 2.0,
                 max_sample: int = 20) -> None:
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise ValueError(f"Estimator total must be a whole number >= 0 (how many items the loop has), got {total!r}")
        if not threshold_s >= 0 or not sample_s > 0 or max_sample < 1:
            raise ValueError(f"Estimator needs threshold_s >= 0, sample_s > 0 and max_sample >= 1, got "
                             f"{threshold_s!r}, {sample_s!r}, {max_sample!r}")
        self.total, self.what, self.hint, self.threshold_s = total, what, hint, float(threshold_s)
        self.progress, self.device = progress, device
        self.sample_s, self.max_sample = float(sample_s), int(max_sample)
        self.n = 0
        self.measured = 0.0
        #: the projected seconds for ``total`` items once the sample is measured (None before)
        self.projected: float | None = None
        #: the line printed (None when nothing was: short run, progress off, or not decided yet)
        self.line: str | None = None

    @property
    def done(self) -> bool:
        """Whether the sample is measured (the estimate was decided, printed or not)."""
        return self.projected is not None

    def observe(self, seconds: float) -> str | None:
        """Record one item's seconds; returns the estimate line when this call printed it, else None."""
        if self.projected is not None:
            return None
        self.n += 1
        self.measured += max(float(seconds), 0.0)
        if self.measured < self.sample_s and self.n < min(self.max_sample, self.total):
            return None
        per = self.measured / self.n
        self.projected = per * self.total
        if self.projected <= self.threshold_s or self.n >= self.total:
            return None
        on = f", device {self.device}" if self.device else ""
        line = (f"estimate: about {format_seconds(self.projected)} for {self.total} {self.what} "
                f"({format_seconds(per)} per {_singular(self.what)} measured on the first {self.n}{on})")
        if self.hint:
            line += f"; {self.hint}"
        if is_enabled(self.progress):
            self.line = line
            _emit(line)
            return line
        return None


@contextlib.contextmanager
def silence_tqdm_in(*modules: str) -> Iterator[None]:
    """Within the block, the tqdm bars of these (imported) modules are disabled.

    For library code that imports ``tqdm`` directly and so bypasses its library's own switch (transformers'
    GGUF de-quantization: ``transformers.modeling_gguf_pytorch_utils``). A module not imported, or without
    a ``tqdm`` attribute, is left alone.
    """
    import functools

    patched: list[tuple[Any, Any]] = []
    for name in modules:
        mod = sys.modules.get(name)
        original = getattr(mod, "tqdm", None)
        if mod is None or original is None or getattr(original, "_attnsift_silenced", False):
            continue
        quiet = functools.partial(original, disable=True)
        quiet._attnsift_silenced = True  # type: ignore[attr-defined]
        setattr(mod, "tqdm", quiet)
        patched.append((mod, original))
    try:
        yield
    finally:
        for mod, original in patched:
            setattr(mod, "tqdm", original)


_quieted = False


def quiet_third_party() -> None:
    """Silence the progress bars and info chatter of transformers, huggingface_hub, sentence-transformers
    and bm25s (GGUF conversion, "Loading weights", token counting); attnsift's own progress stays.

    Idempotent; cheap when those packages are not imported yet (environment variables are set for them).
    """
    global _quieted
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if _quieted and "transformers" not in sys.modules:
        return
    for name in ("transformers", "huggingface_hub", "sentence_transformers", "bm25s", "accelerate", "gguf"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        except Exception:  # pragma: no cover - an old or partial transformers
            pass
    if "huggingface_hub" in sys.modules:
        try:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        except Exception:  # pragma: no cover
            pass
    _quieted = True
