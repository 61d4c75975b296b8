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


# -- second corpus (issue 14): what hospital exports, copies and disks produce ------------------
def raw_nifti(path: Path, data: np.ndarray, edit: Callable[[nib.Nifti1Header], None] | None = None,
              *, gz: bool | None = None, affine: np.ndarray | None = None,
              claim_shape: tuple[int, ...] | None = None, keep: float = 1.0) -> Path:
    """A NIfTI-1 file written byte by byte, so that header fields nibabel's writer would fix
    (pixdim 0, scl_slope NaN with an offset, a shape the data does not have) stay as given.
    ``keep``: fraction of the voxel bytes written (a file still being copied)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    header.set_data_shape(claim_shape or data.shape)
    header.set_sform(np.diag([0.8, 0.8, 2.0, 1.0]) if affine is None else affine, code=1)
    header.set_qform(np.diag([0.8, 0.8, 2.0, 1.0]) if affine is None else affine, code=1)
    header["vox_offset"] = 352
    if edit is not None:
        edit(header)
    voxels = np.asfortranarray(data).tobytes(order="F")
    payload = header.binaryblock + b"\0" * 4 + voxels[: int(len(voxels) * keep)]
    gz = path.name.endswith(".gz") if gz is None else gz
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def _empty_file(path: Path) -> None:
    path.write_bytes(b"")


def _empty_gzip(path: Path) -> None:
    path.write_bytes(gzip.compress(b""))


def _huge_header(path: Path) -> None:
    """Header: 4000x4000x4000 float32 (256 GB); data: 1 KB."""
    raw_nifti(path, np.zeros(256, np.float32), claim_shape=(4000, 4000, 4000))


def _half_written(path: Path) -> None:
    """The first half of a valid file: an export still being copied into the folder."""
    raw_nifti(path, volume(30), keep=0.5)


def _pixdim(value: float) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        def edit(h: nib.Nifti1Header) -> None:
            h["pixdim"][1:4] = value
        raw_nifti(path, volume(31), edit)
    return write


def _scaled(slope: float, inter: float) -> Callable[[Path], None]:
    """int16 voxels with the scaling fields (CT exports: HU = raw * slope + inter)."""
    def write(path: Path) -> None:
        def edit(h: nib.Nifti1Header) -> None:
            h["scl_slope"], h["scl_inter"] = slope, inter
        raw_nifti(path, scaled_raw(), edit)
    return write


def scaled_raw() -> np.ndarray:
    return (volume(32) * 10 + 1000).astype(np.int16)


def _not_gzipped(path: Path) -> None:
    """An uncompressed NIfTI that a tool named ``.nii.gz``."""
    raw_nifti(path, volume(33), gz=False)


def _gzip_of_nrrd(path: Path) -> None:
    """The wrong file compressed: a gzip of an NRRD named ``.nii.gz``."""
    header = b"NRRD0004\ntype: float\ndimension: 3\nsizes: 24 24 12\nencoding: raw\n\n"
    path.write_bytes(gzip.compress(header + volume(34).tobytes()))


def _rgb(path: Path) -> None:
    """A secondary-capture export: RGB24 voxels."""
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = np.clip(volume(35), 0, 255).astype(np.uint8)
    nib.save(nib.Nifti1Image(rgb, np.diag([0.8, 0.8, 2.0, 1.0])), path)


def _float64_huge(path: Path) -> None:
    data = volume(36).astype(np.float64)
    data[0, 0, 0] = 1e300
    np.save(path, data)


def _directory(path: Path) -> None:
    path.mkdir()
    save_nifti(path / "inside.nii.gz", volume(37))


def _dangling(path: Path) -> None:
    path.symlink_to(path.with_name("moved_away.nii.gz"))


def image_affine() -> np.ndarray:
    return np.diag([0.8, 0.8, 2.0, 1.0])


def true_label() -> np.ndarray:
    """The label of `volume` (its sphere), lopsided along every axis so flips show."""
    label = (volume(0) > 50).astype(np.uint8)
    label[:4, :4, :3] = 1
    return label


def _label_with(affine: np.ndarray, data: np.ndarray | None = None) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        nib.save(nib.Nifti1Image(true_label() if data is None else data, affine), path)
    return write


def mirrored_affine(axis: int = 0) -> np.ndarray:
    """The image grid with voxel axis ``axis`` reversed: same world box, other voxel order."""
    flip = np.eye(4)
    flip[axis, axis], flip[axis, 3] = -1, SHAPE[axis] - 1
    return image_affine() @ flip


def _shifted_affine() -> np.ndarray:
    a = image_affine()
    a[0, 3] += 0.4  # half a voxel
    return a


def _mirrored_elsewhere() -> np.ndarray:
    a = image_affine()
    a[0, 0] = -0.8  # mirrored about the origin: another world box
    return a


def permuted_label() -> tuple[np.ndarray, np.ndarray]:
    """The label stored with voxel axes (i, k, j) and the affine that says so."""
    swap = np.eye(4)[[0, 2, 1, 3]]
    return np.ascontiguousarray(np.transpose(true_label(), (0, 2, 1))), image_affine() @ swap


def _fractional_label(path: Path) -> None:
    """A label resampled with linear interpolation: values between 0 and 1 at the edges."""
    label = true_label().astype(np.float32)
    label[label > 0] = 0.5
    nib.save(nib.Nifti1Image(label, image_affine()), path)


def _nifti2(path: Path) -> None:
    nib.save(nib.Nifti2Image(volume(38), image_affine()), path)


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
    # second corpus
    IngestCase("zero_bytes.nii.gz", _empty_file, ("empty file (0 bytes)",)),
    IngestCase("zero_len.nii", _empty_file, ("empty file (0 bytes)",)),
    IngestCase("empty_stream.nii.gz", _empty_gzip, ("empty file (0 bytes, decompressed)",)),
    IngestCase("huge_header.nii.gz", _huge_header,
               ("(4000, 4000, 4000) float32 = 256.0 GB", "holds 1.0 KB", "wrong header")),
    IngestCase("huge_hdr.nii", _huge_header, ("(4000, 4000, 4000) float32 = 256.0 GB",)),
    IngestCase("half_written.nii", _half_written, ("still being copied",)),
    IngestCase("half_written_gz.nii.gz", _half_written, ("still being copied",)),
    IngestCase("pixdim0.nii.gz", _pixdim(0.0), ("pixdim[1:4] = (0, 0, 0)", "> 0 mm")),
    IngestCase("pixdim_nan.nii.gz", _pixdim(np.nan), ("pixdim[1:4] = (nan, nan, nan)",)),
    IngestCase("slope_nan_offset.nii.gz", _scaled(np.nan, -1024.0),
               ("scl_slope is nan but scl_inter is -1024", "ambiguous")),
    IngestCase("not_gzipped.nii.gz", _not_gzipped, ("not gzip-compressed", "rename it to .nii")),
    IngestCase("gz_of_nrrd.nii.gz", _gzip_of_nrrd, ("not a NIfTI header", "NRRD0004")),
    IngestCase("rgb.nii.gz", _rgb, ("unsupported dtype [('R', 'u1')",)),
    IngestCase("float64_huge.npy", _float64_huge, ("exceed the float32 range",)),
    IngestCase("dir_volume.nii.gz", _directory, ("is a directory, not a volume file",)),
    IngestCase("dangling.nii.gz", _dangling, ("broken symbolic link", "moved_away.nii.gz")),
    IngestCase("label_offgrid.nii.gz", _good(40), ("not on its image's world grid", "resample"),
               label=_label_with(_shifted_affine())),
    IngestCase("label_mirror_elsewhere.nii.gz", _good(41), ("not on its image's world grid",),
               label=_label_with(_mirrored_elsewhere())),
    IngestCase("label_255.nii.gz", _good(42), ("values {0, 255}", "--binarize"),
               label=_label_with(image_affine(), true_label() * 255)),
    IngestCase("label_fraction.nii.gz", _good(43), ("non-integer voxels",),
               label=_fractional_label),
    IngestCase("label_empty.nii.gz", _good(44), ("label is empty",),
               label=_label_with(image_affine(), np.zeros(SHAPE, np.uint8))),
]}
GOOD_FILES = {"good_a.nii.gz": _good(20), "good_b.nii.gz": _good(21)}


@dataclass(frozen=True)
class GoodCase:
    """An awkward but valid input: ingested, with what the store must then hold."""

    name: str
    write: Callable[[Path], None]
    label: Callable[[Path], None] | None = None


# image/label pairs and images a careful reader must accept (each checked by its own test)
GOOD_CASES: dict[str, GoodCase] = {c.name: c for c in [
    GoodCase("scaled_int16.nii.gz", _scaled(0.5, -1024.0)),
    GoodCase("slope_nan.nii.gz", _scaled(np.nan, np.nan)),
    GoodCase("nifti2.nii.gz", _nifti2),
    GoodCase("mixed_dtypes.nii.gz", lambda p: raw_nifti(p, scaled_raw()),
             label=_label_with(image_affine(), true_label().astype(np.float32))),
    GoodCase("label_mirrored.nii.gz", _good(0),
             label=_label_with(mirrored_affine(0), true_label()[::-1].copy())),
    GoodCase("label_permuted.nii.gz", _good(0),
             label=lambda p: _label_with(permuted_label()[1], permuted_label()[0])(p)),
]}


def write_ingest_corpus(base: Path) -> tuple[Path, Path]:
    """``base/images`` (every case + two good volumes) and ``base/labels``; returns both."""
    images, labels = base / "images", base / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for name, write in GOOD_FILES.items():
        write(images / name)
    for good in GOOD_CASES.values():
        good.write(images / good.name)
        if good.label is not None:
            good.label(labels / good.name)
    # the AppleDouble file a macOS copy leaves next to each volume: hidden, skipped
    (images / "._good_a.nii.gz").write_bytes(b"\x00\x05\x16\x07" + bytes(4092))
    # one id from two formats: the first (by name) is ingested, the second refused
    save_nifti(images / "dup.nii.gz", volume(45))
    (images / "dup.nrrd").write_bytes(
        b"NRRD0004\ntype: float\ndimension: 3\nsizes: 24 24 12\nencoding: raw\n"
        b"endian: little\nspace directions: (0.8,0,0) (0,0.8,0) (0,0,2)\n\n"
        + np.asfortranarray(volume(45)).tobytes(order="F"))
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


def write_text_checkpoint(path: Path) -> Path:
    """A text file renamed ``student.pt`` (the unpickler fails with IndexError/KeyError)."""
    path.write_text("semisam student\nweights: see the shared drive\n")
    return path


def truncate_chunk(array_dir: Path) -> Path:
    """Cut the largest chunk file of a Zarr v3 array (``<array_dir>/c/...``) to half its bytes,
    as a copy or sync interrupted mid-file leaves it; returns that chunk's path."""
    chunks = [f for f in (array_dir / "c").rglob("*") if f.is_file()]
    chunk = max(chunks, key=lambda f: f.stat().st_size)
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    return chunk


def write_undecodable_dicom_series(folder: Path, syntax: str = "1.2.840.10008.1.2.4.70") -> Path:
    """A 3-slice CT series whose files declare a compressed transfer syntax (default: JPEG
    Lossless SV1, which needs gdcm or pylibjpeg-libjpeg) around encapsulated bytes."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study = generate_uid(), generate_uid()
    for k in range(3):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = UID(syntax)
        ds = FileDataset(str(folder / f"s{k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = study, series, 1
        ds.Modality, ds.InstanceNumber = "CT", k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, 2.0 * k]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], 2.0
        ds.Rows, ds.Columns = 16, 16
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + bytes(64) + b"\xff\xd9"])
        ds["PixelData"].VR = "OB"
        pydicom.dcmwrite(folder / f"s{k}.dcm", ds, enforce_file_format=True)
    return folder
