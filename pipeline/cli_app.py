"""The typer application object, the global options and the error guard shared by commands."""

from __future__ import annotations

import functools
import logging
import signal
import sys
from typing import Annotated

import typer

from semisam.schemas import SemisamError

from .rounds.interrupt import sigterm_as_interrupt

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="SAM-assisted pseudo-labels for semi-supervised 3D segmentation. "
                  "Settings come from SEMISAM_* environment variables: `semisam config` lists "
                  "them with their values, defaults and meaning.")
_state = {"debug": False}


_RESUME_HINT = {
    "train": "rerun it with --resume to continue from the last checkpoint",
    "demo": "rerun it to start again",
}
"""How to pick up an interrupted command, by command function name (default: rerun it)."""


def guard(fn):
    """Print user errors (`SemisamError`) as one line and exit 2; tracebacks only with --debug.

    SIGTERM (a batch scheduler's stop) raises `interrupt.Interrupted` like Ctrl-C does, so an
    interrupted command runs its clean-up, says so in one line with how to resume, and exits
    128 + the signal number.
    """
    hint = _RESUME_HINT.get(fn.__name__, "rerun the same command to resume")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with sigterm_as_interrupt():
                return fn(*args, **kwargs)
        except KeyboardInterrupt as exc:
            if _state["debug"]:
                raise
            signum = getattr(exc, "signum", signal.SIGINT)
            typer.echo(f"interrupted ({signal.Signals(signum).name}); what had finished is "
                       f"stored: {hint}", err=True)
            raise typer.Exit(128 + signum) from None
        except SemisamError as exc:
            if _state["debug"]:
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


class _DropRayAuthNotice(logging.Filter):
    """Drops Ray's "Token authentication is enabled for this Ray cluster ..." notice, logged on
    every local Ray that semisam starts (Ray >= 2.5x turns token auth on by default there and says
    so each time). The notice that auth is *disabled* is kept: that one is about exposure."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")


class _DropOrphanedStoreErrors(logging.Filter):
    """Drops asyncio's "Future exception was never retrieved" reports of an `OSError`.

    zarr writes a node's keys concurrently; when the store's file system refuses one write
    (read-only, full), the sibling writes fail the same way and their futures are collected
    later with nobody awaiting them. The command has already reported that error in one line;
    the orphaned copies would print a traceback after it. Kept with ``--debug``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Future exception was never retrieved"):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, OSError)


def quiet_orphaned_store_errors() -> None:
    """Install `_DropOrphanedStoreErrors` on the asyncio logger (idempotent)."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _DropOrphanedStoreErrors) for f in logger.filters):
        logger.addFilter(_DropOrphanedStoreErrors())


def quiet_ray_notices() -> None:
    """Install `_DropRayAuthNotice` on Ray's authentication logger (idempotent)."""
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _DropRayAuthNotice) for f in logger.filters):
        logger.addFilter(_DropRayAuthNotice())


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="tracebacks and debug logs")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="warnings and errors only")] = False,
) -> None:
    _state["debug"] = debug
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr,
                        force=True)
    quiet_ray_notices()
    if not debug:
        quiet_orphaned_store_errors()
    check_settings()


def check_settings() -> None:
    """Refuse an invalid ``SEMISAM_*`` variable before any command runs: one line, exit 2."""
    from semisam.schemas.settings import load_settings

    try:
        load_settings()
    except SemisamError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
