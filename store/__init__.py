"""Zarr store access shared by the pipeline, the workers and the training stage."""

from .digest import array_sha256, sha256_file, update_from_file
from .handle import open_store, store_full_error, store_write_failure
from .remote import fsspec_options, is_url, worker_env
from .rounds import (
    clear_record,
    list_rounds,
    read_output,
    read_record,
    read_round_meta,
    volume_status,
    write_outputs,
    write_record,
    write_round_meta,
)
from .volumes import (
    list_metas,
    list_volumes,
    read_class_map,
    read_image,
    read_label,
    read_meta,
    read_reference,
    slice_chunks,
    write_class_map,
    write_volume,
)

__all__ = [
    "open_store", "store_full_error", "store_write_failure", "fsspec_options", "is_url", "worker_env", "array_sha256", "sha256_file", "update_from_file", "clear_record", "list_rounds", "read_output", "read_record",
    "read_round_meta", "volume_status", "write_outputs", "write_record", "write_round_meta",
    "list_metas", "list_volumes", "read_image", "read_label", "read_meta", "read_reference", "slice_chunks",
    "write_volume", "read_class_map", "write_class_map",
]
