"""Reading JSON config files into pydantic models, with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from .errors import ConfigError

_Model = TypeVar("_Model", bound=BaseModel)


def first_validation_error(exc: ValidationError) -> str:
    """`field 'a.b': message` of a pydantic error's first entry, on one line."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "<root>"
    return f"field '{loc}': {err['msg']}"


def load_json_model(path: Path | None, model: type[_Model]) -> _Model:
    """Read a JSON file into a validated ``model`` (its defaults when ``path`` is None).

    Raises:
        ConfigError: one line naming the file and the first bad field.
    """
    if path is None:
        return model()
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable JSON config ({exc})") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {first_validation_error(exc)}") from None
