"""`ray_error_line`: the one-line reason rounds and predict give for a Ray error."""

from __future__ import annotations

from semisam.pipeline.rounds.ray_start import ray_error_line


def test_last_nonblank_line_without_module_path():
    exc = RuntimeError("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                       "semisam.schemas.errors.CheckpointError: a.pt: not a checkpoint  \n\n")
    assert ray_error_line(exc) == "CheckpointError: a.pt: not a checkpoint"


def test_empty_error_gives_its_class_and_long_lines_are_cut():
    assert ray_error_line(TimeoutError()) == "TimeoutError"
    assert ray_error_line(ValueError("x" * 1000)) == "x" * 300
