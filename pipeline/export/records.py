"""What an export is and says: its formats, one volume's outcome, the report of one call, and
the two facts every format reads from the store first (is the volume done, its affine)."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from pydantic import Field

from semisam.schemas import CONFIDENCE_SCALE, StoreError, StrictModel, VolumeStatus, output_path

if TYPE_CHECKING:
    import numpy as np
    import zarr


class ExportFormat(str, Enum):
    """File formats of `export_round`."""

    nifti = "nifti"
    ome_zarr = "ome-zarr"
    dicom_seg = "dicom-seg"


class ExportedVolume(StrictModel):
    volume_id: str
    written: bool
    reason: str | None = Field(None, description="why a volume was skipped")
    files: dict[str, str] = Field(default_factory=dict, description="kind -> path written")
    orientation: str | None = Field(None, description="axis codes of the affine, e.g. RAS")
    geometry: str | None = Field(None, description="OME-Zarr: world or voxel-frame")


class ExportReport(StrictModel):
    """What one `export` call wrote (also saved as ``DIR/export.json``)."""

    store: str
    round: int
    fingerprint: str
    out_dir: str
    format: ExportFormat
    confidence_encoding: str = (f"uint8 with scl_slope 1/{CONFIDENCE_SCALE}: "
                                f"value/{CONFIDENCE_SCALE} in [0, 1]")
    volumes: list[ExportedVolume] = Field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(v.written for v in self.volumes)


def volume_affine(root: zarr.Group, round_index: int, volume_id: str) -> np.ndarray:
    """The 4x4 affine of a volume's outputs: the arrays' ``affine`` attribute (copied from the
    source at round time), else the volume's `VolumeMeta`."""
    import numpy as np

    from semisam.store import read_meta

    attrs = dict(root[output_path(round_index, "pseudo_label", volume_id)].attrs)
    affine = attrs.get("affine") or read_meta(root, volume_id).affine
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise StoreError(f"volume '{volume_id}': stored affine is not a finite 4x4 matrix")
    return matrix


def skip_reason(root: zarr.Group, round_index: int, volume_id: str) -> str | None:
    from semisam.store import read_record

    record = read_record(root, round_index, volume_id)
    if record is None or record.status != VolumeStatus.done:
        return f"not done ({'pending' if record is None else record.status.value})"
    return None


