"""What every command group of the CLI shares (typer only at import time)."""
from __future__ import annotations

import functools

import typer

USER_ERRORS = (ValueError, TypeError, ImportError, FileNotFoundError, FileExistsError, KeyError)


def fail(message: str, code: int = 2) -> "typer.Exit":
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def guard(fn):
    """Turn user errors (ValueError, TypeError, ImportError, FileNotFoundError, FileExistsError, KeyError)
    into a one-line ``error: ...`` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except USER_ERRORS as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise fail(str(msg)) from None

    return wrapper
