"""The ``SEMISAM_*`` environment variables, in one validated settings model.

Every variable semisam reads from the environment is a field of `Settings` (name: ``SEMISAM_``
plus the field name in capitals); `load_settings` reads them afresh at each call (tests and
operators change the environment between calls) and turns an invalid value into one
`ConfigError` line naming the variable and what is wrong. ``semisam config`` lists them.

Variables of other tools that semisam passes on (``AWS_*`` for object stores) are not here: they
belong to the storage library (`semisam.schemas.storage`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from .config import MaskerKind, SamFamily, SamType
from .errors import ConfigError
from .storage import StorageConfig

ENV_PREFIX = "SEMISAM_"


class TableStyle(str, Enum):
    """How the CLI prints tables (unset: rich on a terminal, Markdown otherwise)."""

    rich = "rich"
    markdown = "markdown"


class Settings(BaseSettings):
    """Every ``SEMISAM_*`` environment variable; unset ones take the defaults below."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True,
                                      extra="ignore", case_sensitive=False)

    masker: MaskerKind | None = Field(
        None, description="masker of `semisam demo`: random_walker picks the weight-free masker "
        "(unset: LiteMedSAM, or SAM when SEMISAM_SAM_CHECKPOINT is set)")
    sam_checkpoint: Path | None = Field(
        None, description="SAM/MedSAM .pth that `semisam demo` uses instead of LiteMedSAM")
    sam_type: SamType = Field(
        SamType.vit_b, description="architecture of SEMISAM_SAM_CHECKPOINT (vit_b|vit_l|vit_h)")
    sam_family: SamFamily = Field(
        SamFamily.sam, description="preprocessing of SEMISAM_SAM_CHECKPOINT (sam|medsam)")
    storage: Annotated[StorageConfig | None, NoDecode] = Field(
        None, description="object-store defaults for every command (inline JSON or the path of "
        "a JSON file, fields of StorageConfig); forwarded to Ray workers as inline JSON")
    tables: TableStyle | None = Field(
        None, description="CLI tables: rich|markdown (unset: rich on a terminal, else Markdown)")
    hold_after_checkpoint: Path | None = Field(
        None, description="for tests: while this file exists, training waits after each resume "
        "checkpoint it writes")

    @field_validator("storage", mode="before")
    @classmethod
    def _storage_json(cls, value: Any) -> Any:
        """Inline JSON (starts with ``{``) or the path of a JSON file -> a dict for the model."""
        if not isinstance(value, str):
            return value
        raw = value.strip()
        if not raw:
            return None
        try:
            text = raw if raw.startswith("{") else Path(raw).read_text(encoding="utf-8")
            return json.loads(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON nor a readable JSON file ({exc})") from None

    @field_validator("tables", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


def env_name(field: str) -> str:
    """The environment variable of a `Settings` field (``sam_type`` -> ``SEMISAM_SAM_TYPE``)."""
    return ENV_PREFIX + field.upper()


def _one_line(exc: ValidationError) -> str:
    """The first error of ``exc`` as ``SEMISAM_X: what is wrong (got 'value')``."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    name = env_name(loc[0]) if loc else ENV_PREFIX + "*"
    msg = err["msg"].removeprefix("Value error, ")
    if len(loc) > 1:
        return f"{name}: field '{'.'.join(loc[1:])}': {msg}"
    got = err.get("input")  # never echoed for storage: its JSON may be long
    shown = f" (got {got!r})" if isinstance(got, str) and loc[0] != "storage" else ""
    return f"{name}: {msg}{shown}"


def load_settings() -> Settings:
    """The settings from the current environment.

    Raises:
        ConfigError: a variable's value is invalid (one line naming the variable).
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    except SettingsError as exc:
        raise ConfigError(f"{ENV_PREFIX}*: {exc}") from None


class SettingInfo(BaseModel):
    """One row of ``semisam config``."""

    name: str = Field(description="environment variable")
    value: str | None = Field(description="its value in this environment; None when unset")
    default: str | None = Field(description="value used when unset; None: none")
    description: str
    for_tests: bool = Field(False, description="a pause point for tests, not a user setting")


class SettingsListing(BaseModel):
    """What ``semisam config --json`` prints."""

    variables: list[SettingInfo]
    unknown: list[str] = Field(default_factory=list,
                               description="SEMISAM_* variables that are set but unknown (typos?)")


def describe_settings(env: Mapping[str, str] | None = None) -> SettingsListing:
    """Every setting's variable, raw value (``env``, default the process environment), default
    and description, plus the set ``SEMISAM_*`` names that no setting reads."""
    env = os.environ if env is None else env
    upper = {k.upper(): v for k, v in env.items()}
    rows = []
    for field, info in Settings.model_fields.items():
        name = env_name(field)
        raw = upper.get(name) or None
        default = info.default.value if isinstance(info.default, Enum) else info.default
        rows.append(SettingInfo(name=name, value=raw,
                                default=None if default is None else str(default),
                                description=info.description or "",
                                for_tests=(info.description or "").startswith("for tests")))
    known = {r.name for r in rows}
    unknown = sorted(k for k in upper if k.startswith(ENV_PREFIX) and k not in known)
    return SettingsListing(variables=rows, unknown=unknown)
