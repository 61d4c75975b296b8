"""Run the real `semisam` typer app in the test process (for CLI tests that need no subprocess)."""

from __future__ import annotations

import logging

from typer.testing import CliRunner, Result

from semisam.pipeline.cli import app


def invoke(*args: str, code: int = 0) -> Result:
    """``semisam ARGS...`` in this process, asserting its exit status is ``code``.

    The root logger is restored afterwards: the app's callback reconfigures it onto the
    runner's temporary streams.
    """
    handlers, level = logging.root.handlers[:], logging.root.level
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
    assert result.exit_code == code, (args, result.exit_code, result.output, result.exception)
    return result
