"""Ingest: read NIfTI / NRRD / h5 / npy volumes, validate them and write them into the store."""

from ..image_io import LoadedVolume, read_label, read_volume, volume_id_for
from .ingest import IngestReport, IngestStatus, VolumeIngest, ingest
from .sources import load_labeled_ids

__all__ = [
    "IngestReport",
    "IngestStatus",
    "LoadedVolume",
    "VolumeIngest",
    "ingest",
    "load_labeled_ids",
    "read_label",
    "read_volume",
    "volume_id_for",
]
