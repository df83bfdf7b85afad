"""Errors raised by attnsift, and the optional-dependency guard."""
from __future__ import annotations

import importlib
from types import ModuleType


class AttnsiftError(Exception):
    """Base class of attnsift's own errors."""


class DatasetError(AttnsiftError, ValueError):
    """A data set could not be found or read. The message says what to place where."""


class DataFormatError(DatasetError):
    """A malformed line in a data file; the message names the file and the line number."""


class IndexError_(AttnsiftError, ValueError):
    """An on-disk index is missing, corrupted, or does not match what was asked for."""


# Public, readable name (``IndexError`` would shadow the builtin).
IndexCorruptedError = IndexError_


class MissingDependencyError(AttnsiftError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the pip extra.

    Parameters
    ----------
    module : str
        Dotted module name to import.
    extra : str
        The attnsift extra that provides it (``llm``, ``dense``, ``kernels``, ``lucene``, ``plots``).
    purpose : str, optional
        What needs it, for the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" for {purpose}" if purpose else ""
        hint = ""
        if extra in ("llm", "dense", "all"):
            hint = " (install torch first, e.g. `pip install torch==2.13.0`, so pip does not pull a CUDA build)"
        raise MissingDependencyError(
            f"`{module}` is needed{what} but is not importable: install the extra with "
            f"`pip install 'attnsift[{extra}]'`{hint}. Original error: {exc}"
        ) from exc


class AttnsiftDeprecationWarning(FutureWarning):
    """A name that still works but will be removed in the next release (shown by default, unlike
    DeprecationWarning); the message names the replacement."""


def deprecated(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` (an option, keyword or spec key) is deprecated in favour of ``new``.

    The old spelling keeps working for one release. The CLI shows the warning as one ``warning:`` line
    on stderr (see :func:`attnsift.cli.common.guard`); in Python it is an :class:`AttnsiftDeprecationWarning`.
    """
    import warnings

    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new}",
                  AttnsiftDeprecationWarning, stacklevel=stacklevel)
