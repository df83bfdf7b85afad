"""The typer application, its global options and the small helpers every command module shares.

Command modules (``cli/main.py``, ``cli/search.py``) register on :data:`app`; only typer is imported at
module level, so ``attnsift --help`` stays instant.
"""
from __future__ import annotations

import logging
import sys

import typer

from attnsift.cli.common import print_json

app = typer.Typer(
    name="attnsift",
    help="Search and reranking that reads a language model's attention.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

log = logging.getLogger("attnsift")

DEFAULT_METRICS = "nDCG@10,MRR@10,R@100,AP"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )



def _metrics(metrics: str) -> list[str]:
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    if not names:
        raise ValueError("--metrics is empty; give a comma-separated list such as nDCG@10,MRR@10,R@100")
    return names


_print_json = print_json  # the commands' JSON printer (valid JSON: no NaN)


def _print_table(reports, title: str | None = None) -> None:
    from rich.console import Console

    from attnsift.eval.report import render_rich_table

    Console(stderr=False, width=160).print(render_rich_table(reports, baseline=0 if len(reports) > 1 else None, title=title))


def _version_callback(value: bool) -> None:
    if value:
        from attnsift import __version__

        typer.echo(f"attnsift {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress to stderr."),
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version."),
) -> None:
    _setup_logging(verbose)
