"""Generators of the bad-input corpus: every broken file is written into ``tmp_path`` by a test.

No binaries are committed: each case is a few lines of numpy/nibabel/pynrrd/h5py/torch here.
`INGEST_CASES` maps a file name to (writer, words the one-line error must contain).
"""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import torch

SHAPE = (24, 24, 12)


def volume(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A float32 volume with a bright sphere (a valid image)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape[:3]).astype(np.float32)
    centre = np.array(shape[:3], np.float32)[:, None, None, None] / 2
    sphere = (((grid - centre) ** 2).sum(0) < (min(shape[:3]) / 3) ** 2).astype(np.float32)
    data = 100 * sphere + rng.normal(0, 5, shape[:3]).astype(np.float32)
    return data.reshape(shape) if len(shape) == 3 else np.resize(data, shape)


def save_nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.0, 1.0])), path)
    return path


def _truncated(path: Path) -> None:
    save_nifti(path, volume(1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt(path: Path) -> None:
    """A gzip stream whose compressed bytes are scrambled in the middle (CRC/inflate error)."""
    raw = gzip.decompress(save_nifti(path, volume(2)).read_bytes())
    packed = bytearray(gzip.compress(raw))
    mid = len(packed) // 2
    packed[mid : mid + 64] = bytes((b ^ 0xA5) for b in packed[mid : mid + 64])
    path.write_bytes(bytes(packed))


def _corrupt_header(path: Path) -> None:
    """A NIfTI header with a wrong size field and magic (the gzip stream itself is intact)."""
    raw = bytearray(gzip.decompress(save_nifti(path, volume(3)).read_bytes()))
    raw[0:4] = b"\xff\xff\xff\x7f"
    raw[344:348] = b"zzzz"
    path.write_bytes(gzip.compress(bytes(raw)))


def _nrrd_wrong_header(path: Path) -> None:
    """Header claims 3 axes of 24x24x40 float voxels; the data holds 24x24x12."""
    data = volume(3).astype("<f4")
    header = ("NRRD0004\ntype: float\ndimension: 3\nsizes: 24 24 40\nencoding: raw\n"
              "endian: little\nspace directions: (1,0,0) (0,1,0) (0,0,2)\n\n")
    path.write_bytes(header.encode() + np.asfortranarray(data).tobytes(order="F"))


def _h5_without_image(path: Path) -> None:
    with h5py.File(path, "w") as fh:
        fh["img"] = volume(4)


def _with_value(value: float) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        data = volume(5)
        data[3, 4, 5] = value
        data[10, 11, 6] = value
        save_nifti(path, data)

    return write


def _constant(path: Path) -> None:
    save_nifti(path, np.full(SHAPE, 7.0, np.float32))


def _two_d(path: Path) -> None:
    save_nifti(path, volume(6)[:, :, 0])


def _four_d(path: Path) -> None:
    save_nifti(path, np.stack([volume(7), volume(8)], axis=-1))


def _zero_axis(path: Path) -> None:
    np.save(path, np.zeros((0, 24, 12), np.float32))


def _complex(path: Path) -> None:
    np.save(path, volume(9).astype(np.complex64))


def _good(seed: int) -> Callable[[Path], None]:
    return lambda path: save_nifti(path, volume(seed))


@dataclass(frozen=True)
class IngestCase:
    """One bad input file for `semisam ingest` (and its label, for label cases)."""

    name: str
    write: Callable[[Path], None]
    words: tuple[str, ...]
    label: Callable[[Path], None] | None = None


INGEST_CASES: dict[str, IngestCase] = {c.name: c for c in [
    IngestCase("truncated.nii.gz", _truncated, ("truncated or corrupt",)),
    IngestCase("corrupt_header.nii.gz", _corrupt_header, ("truncated or corrupt",)),
    IngestCase("corrupt_data.nii.gz", _corrupt, ("truncated or corrupt",)),
    IngestCase("wrong_header.nrrd", _nrrd_wrong_header, ("NRRD",)),
    IngestCase("no_image.h5", _h5_without_image, ("no 'image' dataset",)),
    IngestCase("nan_voxels.nii.gz", _with_value(np.nan), ("2 NaN voxels",)),
    IngestCase("inf_voxels.nii.gz", _with_value(np.inf), ("2 Inf voxels",)),
    IngestCase("constant.nii.gz", _constant, ("constant",)),
    IngestCase("flat2d.nii.gz", _two_d, ("2D", "need a 3D volume")),
    IngestCase("multi4d.nii.gz", _four_d, ("4D", "one 3D volume")),
    IngestCase("zero_axis.npy", _zero_axis, ("zero-length axis",)),
    IngestCase("complex.npy", _complex, ("unsupported dtype complex64",)),
    IngestCase("label_shape.nii.gz", _good(10), ("label shape", "differs from image shape"),
               label=lambda p: save_nifti(p, np.zeros((24, 24, 10), np.uint8))),
    IngestCase("label_multi.nii.gz", _good(11), ("binary label {0, 1} is required",),
               label=lambda p: save_nifti(p, (np.indices(SHAPE)[0] % 3).astype(np.uint8))),
    IngestCase("dots..id.nii.gz", _good(12), ("not a safe path segment",)),
    IngestCase("ctl\x07id.nii.gz", _good(13), ("not a safe path segment",)),
]}
GOOD_FILES = {"good_a.nii.gz": _good(20), "good_b.nii.gz": _good(21)}


def write_ingest_corpus(base: Path) -> tuple[Path, Path]:
    """``base/images`` (every case + two good volumes) and ``base/labels``; returns both."""
    images, labels = base / "images", base / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for name, write in GOOD_FILES.items():
        write(images / name)
    for case in INGEST_CASES.values():
        case.write(images / case.name)
        if case.label is not None:
            case.label(labels / case.name)
    return images, labels


class _RunsCode:
    """Unpickling this runs ``touch <marker>`` (what weights_only=True must refuse)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_code_pickle(path: Path, marker: Path, wrap: str | None = None) -> Path:
    """A torch checkpoint that would create ``marker`` if loaded with weights_only=False."""
    payload: object = {"state_dict": {"w": torch.zeros(2)}, "hook": _RunsCode(marker)}
    if wrap == "student":
        payload = {"format": "semisam-student", "version": 1, "spec": {}, "state_dict": {},
                   "hook": _RunsCode(marker)}
    torch.save(payload, path, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    return path


def write_not_state_dict(path: Path) -> Path:
    torch.save([torch.zeros(3), "not a state dict"], path)
    return path


def write_wrong_sam_type(path: Path) -> Path:
    """One vit_l-shaped tensor (embed dim 1024) where vit_b expects 768."""
    torch.save({"image_encoder.patch_embed.proj.bias": torch.zeros(1024)}, path)
    return path


def write_truncated_checkpoint(path: Path) -> Path:
    torch.save({"image_encoder.patch_embed.proj.bias": torch.zeros(768)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def break_store_volumes(store: Path) -> dict[str, tuple[str, ...]]:
    """Damage unlabeled volumes of a phantom store the way another tool could have written them
    (ingest would refuse these files); returns volume id -> words its failure must name."""
    import zarr

    root = zarr.open_group(store, mode="a", use_consolidated=False)
    cases = {"ph02": (np.nan, ("NaN/Inf",)), "ph03": (np.inf, ("NaN/Inf",))}
    for vid, (value, _) in cases.items():
        arr = root[f"volumes/{vid}/image"]
        data = arr[...]
        data[3, 4, 5] = value
        arr[...] = data
    group = root["volumes/ph04"]
    group.create_array("image", data=np.ones((48, 48), np.float32), overwrite=True)
    group = root["volumes/ph05"]
    group.create_array("image", shape=(0, 48, 32), chunks=(1, 48, 8), dtype="float32",
                       overwrite=True)
    return {"ph02": ("NaN/Inf",), "ph03": ("NaN/Inf",), "ph04": ("3D", "(48, 48)"),
            "ph05": ("non-empty 3D", "(0, 48, 32)")}
