"""Where data sets are looked for by name: the data folder.

Resolution order (the first that is set wins):

1. ``$ATTNSIFT_DATA``;
2. the folder recorded at install time by ``make install``, in ``<sys.prefix>/etc/attnsift/data-dir``
   (read from ``sys.prefix`` so an activated venv and ``.venv/bin/attnsift`` both see it);
3. the documented default, ``<cache root>/data`` (``~/.cache/attnsift/data``, or ``$ATTNSIFT_CACHE/data``).

A data set named ``scifact`` is then ``<data folder>/scifact/`` (BEIR layout). ``attnsift datasets --path``
prints the folder and where that setting came from.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from attnsift.eval.datasets.base import DATA_ENV
from attnsift.fingerprint import cache_root

__all__ = ["INSTALL_FILE", "install_file", "data_folder_info", "data_folder", "describe_data_folder"]

logger = logging.getLogger(__name__)

# Relative to sys.prefix; the Makefile's `install` target writes it (one absolute path, one line).
INSTALL_FILE = Path("etc") / "attnsift" / "data-dir"


def install_file() -> Path:
    """The file ``make install`` records the data folder in: ``<sys.prefix>/etc/attnsift/data-dir``."""
    return Path(sys.prefix) / INSTALL_FILE


def _recorded_folder() -> str | None:
    f = install_file()
    try:
        text = f.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:  # unreadable: fall through to the default, say why
        logger.warning("cannot read the data folder recorded in %s (%s); using the default", f, exc)
        return None
    return text.splitlines()[0].strip() if text else None


def data_folder_info() -> dict[str, Any]:
    """The folder data sets are looked for in, and where that setting came from.

    Returns
    -------
    dict
        ``path`` (str, absolute), ``source`` (``"ATTNSIFT_DATA"``: the environment variable;
        ``"install"``: recorded by ``make install`` in :func:`install_file`; ``"default"``:
        ``<cache root>/data``) and ``exists`` (bool: the folder is there).
    """
    env = os.environ.get(DATA_ENV)
    if env:
        path, source = Path(env), "ATTNSIFT_DATA"
    else:
        recorded = _recorded_folder()
        if recorded:
            path, source = Path(recorded), "install"
        else:
            path, source = cache_root() / "data", "default"
    path = path.expanduser().absolute()
    return {"path": str(path), "source": source, "exists": path.is_dir()}


def data_folder() -> Path:
    """The folder data sets are looked for in (see :func:`data_folder_info`); it may not exist."""
    return Path(data_folder_info()["path"])


def describe_data_folder(info: dict[str, Any] | None = None) -> str:
    """One sentence for error messages: the folder searched, where the setting came from, how to change it.

    Parameters
    ----------
    info : dict, optional
        A :func:`data_folder_info` result (read now when omitted).
    """
    info = info or data_folder_info()
    origin = {
        "ATTNSIFT_DATA": f"from ${DATA_ENV}",
        "install": f"recorded by `make install` in {install_file()}",
        "default": f"the default, as neither ${DATA_ENV} nor an install-time folder is set",
    }[info["source"]]
    missing = "" if info["exists"] else ", which does not exist"
    return (f"the data folder is {info['path']} ({origin}){missing}; place <name>/ there in BEIR layout "
            f"or `export {DATA_ENV}=/folder/of/data/sets`")
