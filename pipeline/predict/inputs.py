"""Predict's input scans: which sources a command line names, their output ids and how each is
read, all through `semisam.pipeline.image_io` (the readers ingest uses: same errors, same
geometry). One series of a multi-series DICOM folder is the source ``FOLDER#series=UID``."""

from __future__ import annotations

from pathlib import Path

from semisam.schemas import ConfigError, InputError

from ..image_io import (
    LoadedVolume,
    collect_sources,
    is_dicom_dir,
    read_dicom_series,
    read_volume,
    volume_id_for,
)
from ..image_io.dicom import dicom_volume_id, series_volume_ids
from ..image_io.validate import input_error

__all__ = ["check_unique_ids", "collect_inputs", "input_volume_id", "read_input"]

_SERIES = "#series="
"""Marks one series of a multi-series DICOM folder in an input path: ``FOLDER#series=UID``."""


def collect_inputs(inputs: list[Path | str]) -> list[Path]:
    """Files named, the supported files directly inside folders named (ingest's rule), and
    folders of DICOM slices as one input each (one per series when a folder holds several)."""
    files: list[Path] = []
    plain: list[Path] = []
    for source in map(Path, inputs):
        if source.is_dir() and is_dicom_dir(source):
            series = series_volume_ids(source)  # several series: one input each
            files += [source if uid is None else Path(f"{source}{_SERIES}{uid}")
                      for _, uid in series]
        else:
            plain.append(source)
    return files + collect_sources(plain)


def _dicom_input(source: Path) -> tuple[Path, str | None] | None:
    """``(folder, SeriesInstanceUID or None)`` of a DICOM input, None for a file."""
    text = str(source)
    if _SERIES in text:
        folder, uid = text.rsplit(_SERIES, 1)
        return Path(folder), uid
    return (source, None) if source.is_dir() else None


def input_volume_id(source: Path) -> str:
    """The output name of an input: ingest's volume id (a series: ``<folder>_s<number>``).

    Raises:
        InputError: an unsupported or unsafe name, or a series the folder does not hold.
    """
    found = _dicom_input(source)
    if found is None:
        return volume_id_for(source)
    folder, uid = found
    if uid is None:
        return dicom_volume_id(folder)
    ids = {u: vid for vid, u in series_volume_ids(folder)}
    if uid not in ids:
        raise input_error(folder, f"no DICOM image series {uid} in the folder")
    return ids[uid]


def check_unique_ids(sources: list[Path]) -> None:
    """Refuse, before any work, two inputs that would write the same output (``a.nii`` and
    ``a.nii.gz``; ingest refuses the second as a duplicate id too). An input whose id cannot be
    made is left to fail on its own when it is segmented.

    Raises:
        ConfigError: one line naming both inputs and the id they share.
    """
    seen: dict[str, Path] = {}
    for source in sources:
        try:
            vid = input_volume_id(source)
        except InputError:
            continue
        if vid in seen:
            raise ConfigError(
                f"{seen[vid]} and {source} would both be written as '{vid}' (one output per "
                "volume id): rename one, or predict them into separate --out folders"
            )
        seen[vid] = source


def read_input(source: Path) -> LoadedVolume:
    """The `LoadedVolume` of one input (a file, a DICOM folder or one series of one).

    Raises:
        InputError: one line naming the file or folder and the problem.
    """
    found = _dicom_input(source)
    if found is not None:
        return read_dicom_series(*found)
    return read_volume(source)
