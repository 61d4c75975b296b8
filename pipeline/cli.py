"""The `semisam` command line: a thin typer layer over the library functions.

Each command lives in ``pipeline/commands/<name>.py`` and registers itself on `app`.
"""

from __future__ import annotations

from .cli_app import app
from .commands import (  # noqa: F401  (registers commands)
    adapt,
    config,
    correct,
    demo,
    evaluate,
    export,
    ingest,
    inspect,
    loop,
    predict,
    report,
    round,
    suggest,
    train,
)


def main() -> None:
    app()


__all__ = ["app", "main"]
