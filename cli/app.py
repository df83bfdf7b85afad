"""The typer application, its global options and the small helpers every command module shares.

Command modules (``cli/main.py``, ``cli/search.py``) register on :data:`app`; only typer is imported at
module level, so ``attnsift --help`` stays instant. Help is plain click help (``rich_markup_mode=None``):
at 80 columns every option name is shown whole and flags carry no ``<bool>``. Global options:
``--quiet`` (no progress on stderr; progress is on in every other mode, ``--json`` included),
``--verbose``, ``--version``.
"""
from __future__ import annotations

import logging
import sys

import typer

from attnsift.cli.common import print_json
from typer.core import TyperGroup

#: Global flags accepted anywhere on the command line (before a ``--``).
GLOBAL_FLAGS = ("--quiet",)


class _Root(TyperGroup):
    """The root group: ``attnsift rerank ... --quiet`` means ``attnsift --quiet rerank ...``."""

    def parse_args(self, ctx, args):  # noqa: ANN001, ANN201
        cut = args.index("--") if "--" in args else len(args)
        head, tail = args[:cut], args[cut:]
        moved = [a for a in head if a in GLOBAL_FLAGS]
        return super().parse_args(ctx, moved + [a for a in head if a not in GLOBAL_FLAGS] + tail)


app = typer.Typer(
    cls=_Root,
    name="attnsift",
    help="Search and reranking that reads a language model's attention.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's panels cut option names at 80 columns
)

log = logging.getLogger("attnsift")

DEFAULT_METRICS = "nDCG@10,MRR@10,R@100,AP"


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is when a record is emitted."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property ignores it
        pass


#: Loggers whose warnings are messages for the user: shown as one ``warning: ...`` line (no timestamp).
USER_WARNING_LOGGERS = ("attnsift.rerank.truncation",)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in USER_WARNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(getattr(h, "_attnsift_user", False) for h in logger.handlers):
            handler = _StderrHandler()
            handler.setFormatter(logging.Formatter("warning: %(message)s"))
            handler._attnsift_user = True  # type: ignore[attr-defined]
            handler.setLevel(logging.WARNING)
            logger.addHandler(handler)
            logger.propagate = False



def _metrics(metrics: str) -> list[str]:
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    if not names:
        raise ValueError("--metrics is empty; give a comma-separated list such as nDCG@10,MRR@10,R@100")
    return names


_print_json = print_json  # the commands' JSON printer (valid JSON: no NaN)


def _print_table(reports, title: str | None = None) -> None:
    """The metrics table on stdout: ``title``'s lines first, as plain lines (a table title would wrap at
    80 columns), then a table of fixed layout (no wrapping: a fixed console width, whatever the terminal)."""
    from rich.console import Console

    from attnsift.eval.report import render_rich_table

    for line in (title or "").splitlines():
        typer.echo(line)
    table = render_rich_table(reports, baseline=0 if len(reports) > 1 else None)
    Console(stderr=False, width=160, soft_wrap=False, highlight=False).print(table)


def _version_callback(value: bool) -> None:
    if value:
        from attnsift import __version__

        typer.echo(f"attnsift {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    quiet: bool = typer.Option(False, "--quiet", help="No progress lines on stderr (errors and warnings stay)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log details to stderr."),
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version."),
) -> None:
    _setup_logging(verbose)
    setup_progress(quiet)


def setup_progress(quiet: bool) -> None:
    """Progress on stderr in every mode (``--json`` included) unless ``--quiet``; third-party bars
    (transformers, huggingface_hub, bm25s) folded away either way."""
    from attnsift import progress

    progress.configure(not quiet)
    progress.quiet_third_party()
