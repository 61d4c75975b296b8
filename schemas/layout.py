"""The Zarr store layout: schema version, path builders and volume-id rules.

::

    store.zarr/                       attrs: schema_version, description, classes (multi-class)
      volumes/<id>/image              float32, (X, Y, Z) as ingested
      volumes/<id>/label              uint8 class values (0 background; {0,1} one structure),
                                      labeled volumes only
      volumes/<id>/reference          uint8 as label, evaluation-only truth of unlabeled volumes
      volumes/<id>                    attrs: VolumeMeta
      rounds/<r>                      attrs: RoundMeta
      rounds/<r>/pseudo_label/<id>    uint8 {0,1}
      rounds/<r>/confidence/<id>      uint8, 0..255 encodes confidence 0..1 (value/255)
      rounds/<r>/records/<id>         attrs only: VolumeRecord
"""

from __future__ import annotations

import re

from .errors import InputError

SCHEMA_VERSION = 2  # the newest layout this semisam reads
MULTICLASS_SCHEMA_VERSION = 2  # stores with a class map (``classes``); one-structure stores stay 1
NEW_STORE_SCHEMA_VERSION = 1  # what a new store is created with (raised by a class map)
CONFIDENCE_SCALE = 255  # confidence uint8 value v means v / 255

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_volume_id(volume_id: str) -> str:
    """Return the id if it is a safe single path segment, else raise `InputError`.

    Allowed: letters, digits, '.', '_', '-', starting with a letter or digit, at most 128
    characters, and not '.' / '..'. This excludes '/', '\\', control characters and spaces.
    """
    if not isinstance(volume_id, str) or not _ID_RE.match(volume_id) or ".." in volume_id:
        raise InputError(
            f"volume id {volume_id!r} is not a safe path segment "
            "(use letters, digits, '.', '_', '-'; no '/', '..' or control characters)"
        )
    return volume_id


def volume_path(volume_id: str) -> str:
    return f"volumes/{validate_volume_id(volume_id)}"


def round_path(round_index: int) -> str:
    if round_index < 0:
        raise InputError(f"round must be >= 0, got {round_index}")
    return f"rounds/{round_index}"


def output_path(round_index: int, kind: str, volume_id: str) -> str:
    """``rounds/<r>/<kind>/<id>`` with kind in pseudo_label | confidence | records."""
    if kind not in ("pseudo_label", "confidence", "records"):
        raise ValueError(f"unknown output kind {kind!r}")
    return f"{round_path(round_index)}/{kind}/{validate_volume_id(volume_id)}"
