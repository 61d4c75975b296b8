"""Image input shared by ingest and predict: read and validate a volume or a label from any
supported source (NIfTI, NRRD, h5, npy, a folder of DICOM slices), its volume id and its
content hash.

Modules, lowest first (none imports a module above it): `volume` (the returned types),
`validate` (the checks and one-line errors), the formats `nifti`, `nrrd_format`, `h5_npy` and
`dicom`, and `readers` (the dispatch by suffix or folder, and which
sources a command line names).
"""

from .dicom import is_dicom_dir, read_dicom_dir, read_dicom_series, series_volume_ids
from .readers import (
    collect_sources,
    read_label,
    read_label_file,
    read_volume,
    source_sha256,
    volume_id_for,
)
from .volume import LoadedLabel, LoadedVolume

__all__ = [
    "LoadedLabel",
    "LoadedVolume",
    "collect_sources",
    "is_dicom_dir",
    "read_dicom_dir",
    "read_dicom_series",
    "read_label",
    "read_label_file",
    "read_volume",
    "series_volume_ids",
    "source_sha256",
    "volume_id_for",
]
