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

__all__ = ["configure", "is_enabled", "bar", "step", "notice", "quiet_third_party", "format_seconds"]

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
    """``42 s``, ``3.5 min``, ``2.1 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def notice(message: str, progress: bool | None = None) -> None:
    """One line on stderr when progress is enabled."""
    if is_enabled(progress):
        print(message, file=sys.stderr, flush=True)


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
        of = f" {total} {unit}" if total is not None else ""
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
        line = f"{self.desc}: {self.n}{of} {self.unit} in {format_seconds(spent)}"
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
    print(f"{desc} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    yield
    print(f"{desc}: done in {format_seconds(time.perf_counter() - t0)}", file=sys.stderr, flush=True)


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
