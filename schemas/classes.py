"""The class map of a store: which label value is which structure.

A store's labels are ``uint8`` class values, 0 = background, ``1..K`` the structures. The map
names them (``{1: "anterior", 2: "posterior"}``) and is kept in the store root's attributes
(``classes``). A store without one is a one-structure store: ``{1: "foreground"}``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import Field, ValidationError, field_validator

from .base import StrictModel
from .errors import InputError
from .loading import first_validation_error

MAX_CLASS_VALUE = 255  # labels are stored as uint8
BINARY_NAME = "foreground"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")


def default_name(value: int) -> str:
    """The name a class gets when nobody named it: ``class_<value>``."""
    return f"class_{value}"


class ClassMap(StrictModel):
    """Label value (1..255) -> structure name; background (0) is implicit.

    ``names`` is ordered by value. ``K = len(names)`` structures; a student for this map has
    ``K + 1`` output channels, channel ``c`` for label value ``values[c - 1]``.
    """

    names: dict[int, str] = Field(
        default_factory=lambda: {1: BINARY_NAME},
        description="label value -> structure name (letters, digits, ' ._-', up to 64)")

    @field_validator("names")
    @classmethod
    def _check_names(cls, names: dict[int, str]) -> dict[int, str]:
        if not names:
            raise ValueError("a class map needs at least one structure")
        bad = [v for v in names if not 1 <= v <= MAX_CLASS_VALUE]
        if bad:
            raise ValueError(f"class values must be 1..{MAX_CLASS_VALUE} (0 is the background), "
                             f"got {bad[0]}")
        for value, name in names.items():
            if not _NAME_RE.match(name):
                raise ValueError(f"class {value}: name {name!r} must start with a letter or digit "
                                 "and hold only letters, digits, spaces, '.', '_', '-' (<= 64)")
        seen: dict[str, int] = {}
        for value, name in names.items():
            if name in seen:
                raise ValueError(f"classes {seen[name]} and {value} have the same name {name!r}")
            seen[name] = value
        return dict(sorted(names.items()))

    @property
    def values(self) -> list[int]:
        """Label values of the structures, ascending."""
        return list(self.names)

    @property
    def count(self) -> int:
        """K, the number of structures (not counting the background)."""
        return len(self.names)

    @property
    def multiclass(self) -> bool:
        return self.count > 1 or self.values != [1]

    def name(self, value: int) -> str:
        return self.names.get(value, default_name(value))

    def to_attrs(self) -> dict[str, str]:
        """JSON attribute form (string keys)."""
        return {str(v): n for v, n in self.names.items()}


def binary_classes() -> ClassMap:
    """The one-structure map of every store written before class maps existed."""
    return ClassMap()


def parse_classes(text: str | Path) -> ClassMap:
    """A class map from ``--classes``: a JSON file (``{"1": "anterior", "2": "posterior"}``) or
    an inline list ``1=anterior,2=posterior``.

    Raises:
        InputError: unreadable file, bad syntax or invalid values/names (one line).
    """
    source = str(text)
    path = Path(source)
    try:
        if path.suffix == ".json" or path.is_file():
            try:
                raw = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise InputError(f"--classes {source}: not a readable JSON class map ({exc})") from None
            if not isinstance(raw, dict):
                raise InputError(f"--classes {source}: expected a JSON object "
                                 '{"1": "name", ...}') from None
            pairs = list(raw.items())
        else:
            pairs = [item.split("=", 1) for item in source.split(",") if item.strip()]
            if any(len(p) != 2 for p in pairs):
                raise InputError(f"--classes {source!r}: expected VALUE=NAME pairs separated by "
                                 "commas, e.g. 1=anterior,2=posterior")
        names: dict[int, str] = {}
        for key, name in pairs:
            try:
                value = int(str(key).strip())
            except ValueError:
                raise InputError(f"--classes {source}: class value {key!r} is not an integer") from None
            if value in names:
                raise InputError(f"--classes {source}: class value {value} given twice")
            names[value] = str(name).strip()
        return ClassMap(names=names)
    except InputError:
        raise
    except ValidationError as exc:
        raise InputError(f"--classes {source}: {first_validation_error(exc)}") from None
