"""Ingest: read NIfTI / NRRD / h5 / npy volumes, validate them and write them into the store."""

from ..image_io import LoadedVolume, read_label, read_volume, volume_id_for
from .ingest import IngestReport, IngestStatus, VolumeIngest, ingest
from .sources import collect_sources, load_labeled_ids

__all__ = [
    "IngestReport",
    "IngestStatus",
    "LoadedVolume",
    "VolumeIngest",
    "collect_sources",
    "ingest",
    "load_labeled_ids",
    "read_label",
    "read_volume",
    "volume_id_for",
]
