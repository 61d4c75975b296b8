"""Synthetic phantom volumes for the demo and the tests: noisy 3D blobs with an intensity bias."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage


def make_phantom(
    shape: tuple[int, int, int] = (64, 64, 40),
    seed: int = 0,
    noise: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: a smooth irregular blob, a distractor, noise and a multiplicative bias field.

    Returns:
        ``(image XxYxZ float32, label XxYxZ uint8 {0,1})``.
    """
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    centre = [rng.uniform(0.35, 0.65) * s for s in shape]
    radii = [rng.uniform(0.2, 0.3) * s for s in shape]
    dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
    wobble = ndimage.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), sigma=4) * 6.0
    label = (dist + wobble) <= 1.0
    label = ndimage.binary_opening(label, iterations=1)
    lab, n = ndimage.label(label)
    if n > 1:  # one connected structure
        sizes = ndimage.sum(label, lab, range(1, n + 1))
        label = lab == (1 + int(np.argmax(sizes)))
    image = np.where(label, 1.0, 0.3).astype(np.float32)
    # a dimmer distractor blob far from the structure
    dc = [s - c for s, c in zip(shape, centre)]
    ddist = sum(((g - c) / (0.08 * s)) ** 2 for g, c, s in zip(grid, dc, shape))
    image = np.where((ddist <= 1.0) & ~label, 0.6, image)
    bias = 0.8 + 0.4 * (grid[0] / shape[0]) + 0.1 * np.sin(grid[1] / shape[1] * np.pi)
    image = image * bias + rng.normal(0, noise, shape).astype(np.float32)
    image = ndimage.gaussian_filter(image, sigma=0.6)
    return (image * 400.0 + 100.0).astype(np.float32), label.astype(np.uint8)


MULTICLASS_LEVELS = (1.0, 0.75, 1.35)  # image level of structure 1, 2, 3 (background 0.3)


def make_multiclass_phantom(
    shape: tuple[int, int, int] = (64, 64, 40),
    seed: int = 0,
    noise: float = 0.15,
    classes: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """`make_phantom`'s blob cut into ``classes`` (2 or 3) touching structures along axis 0,
    each with its own intensity (`MULTICLASS_LEVELS`), the distractor kept.

    Returns:
        ``(image XxYxZ float32, label XxYxZ uint8 in {0, 1..classes})``: structure ``k`` is the
        ``k``-th slab of the blob's extent along axis 0.
    """
    if classes not in (2, 3):
        raise ValueError(f"classes must be 2 or 3, got {classes}")
    image, blob = make_phantom(shape, seed, noise)
    xs = np.flatnonzero(blob.any(axis=(1, 2)))
    cuts = np.linspace(xs[0], xs[-1] + 1, classes + 1).round().astype(int)
    x = np.arange(shape[0])[:, None, None]
    label = np.zeros(shape, np.uint8)
    for k in range(classes):
        label[(blob > 0) & (x >= cuts[k]) & (x < cuts[k + 1])] = k + 1
    # rescale each structure's intensity: the blob was drawn at level 1.0 (times bias, + noise)
    scale = np.ones(shape, np.float32)
    for k in range(classes):
        scale[label == k + 1] = MULTICLASS_LEVELS[k]
    raw = (image - 100.0) / 400.0
    return ((raw * scale) * 400.0 + 100.0).astype(np.float32), label


def write_phantom_set(
    out_dir: Path,
    count: int = 8,
    shape: tuple[int, int, int] = (64, 64, 40),
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.5),
    seed: int = 0,
    classes: int = 1,
) -> tuple[Path, Path]:
    """Write ``count`` phantoms as NIfTI pairs ``images/phantom_NNN.nii.gz`` and ``labels/...``
    (``classes`` 2 or 3: `make_multiclass_phantom`'s touching structures, label values 1..).

    Returns:
        ``(images_dir, labels_dir)``.
    """
    import nibabel as nib  # only needed for writing files

    images, labels = Path(out_dir) / "images", Path(out_dir) / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    for i in range(count):
        image, label = (make_phantom(shape, seed=seed * 1000 + i) if classes == 1 else
                        make_multiclass_phantom(shape, seed=seed * 1000 + i, classes=classes))
        name = f"phantom_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), images / name)
        nib.save(nib.Nifti1Image(label, affine), labels / name)
    return images, labels
