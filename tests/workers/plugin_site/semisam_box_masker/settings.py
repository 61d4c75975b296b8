"""The box masker's settings: section ``masker.box`` of the round config."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field


class BoxSettings(BaseModel):
    """Probability inside and outside each prompt's box."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # where it leaves a note each time it is built: does not change outputs
    FINGERPRINT_EXCLUDE: ClassVar[tuple[str, ...]] = ("trace_dir",)

    inside: float = Field(0.875, gt=0.5, le=1, description="probability inside the box")
    outside: float = Field(0.0, ge=0, lt=0.5, description="probability outside the box")
    trace_dir: Path | None = Field(None, description="a note per build lands here (tests)")
