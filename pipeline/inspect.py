"""`inspect`: what is in a store, per round and per volume, and overlay montages."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import zarr
from PIL import Image

from semisam.schemas import CONFIDENCE_SCALE, RoundMeta, StoreError, StrictModel, VolumeMeta
from semisam.store import list_metas, list_rounds, read_image, read_output, read_round_meta

from .summary import RoundSummary, summarize_round

log = logging.getLogger(__name__)


class StoreOverview(StrictModel):
    """`semisam inspect STORE` without ``--round``."""

    store: str
    schema_version: int
    volumes: int
    labeled: int
    unlabeled: int
    rounds: list[RoundSummary]


def store_overview(root: zarr.Group, store: str) -> StoreOverview:
    metas = list_metas(root)
    labeled = sum(m.labeled for m in metas)
    rounds = [summarize_round(root, r) for r in list_rounds(root)]
    for r in rounds:
        r.volumes = []  # counts only at this level
    return StoreOverview(store=store, schema_version=int(root.attrs["schema_version"]),
                         volumes=len(metas), labeled=labeled, unlabeled=len(metas) - labeled,
                         rounds=rounds)


class VolumeDetail(StrictModel):
    meta: VolumeMeta
    round: RoundMeta | None = None
    record: dict | None = None


def _middle_slice(mask: np.ndarray | None, axis: int) -> int:
    """Slice index with the most foreground (or the middle one)."""
    if mask is None or not mask.any():
        return 0 if mask is None else mask.shape[axis] // 2
    other = tuple(a for a in range(3) if a != axis)
    return int(np.argmax(mask.sum(axis=other)))


def _to_rgb(gray: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(gray, [0.5, 99.5])
    g = np.clip((gray - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=-1)


def _overlay(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    out = rgb.astype(np.float32)
    m = mask.astype(bool)
    out[m] = 0.5 * out[m] + 0.5 * np.array(colour, np.float32)
    return out.astype(np.uint8)


def round_student_probability(meta: RoundMeta, image: np.ndarray) -> np.ndarray | None:
    """Re-run the round's student on ``image`` if its checkpoint is still there, unchanged."""
    from semisam.schemas import RoundConfig
    from semisam.workers.student import load_student, predict_probability

    from .round_state import sha256_file

    path = Path(meta.student_checkpoint)
    if not path.is_file() or sha256_file(path) != meta.student_sha256:
        log.info("student panel left out: %s is gone or changed since the round", path)
        return None
    model, spec, _ = load_student(path)
    cfg = RoundConfig.model_validate(meta.config)
    return predict_probability(model, image, spec, cfg.student)


def write_montage(root: zarr.Group, round_index: int, volume_id: str, out: Path,
                  scale: int = 3) -> Path:
    """PNG with panels: image | student | pseudo-label | confidence, on the slice with the
    most pseudo-label foreground.

    The student panel is recomputed from the round's student checkpoint (the store keeps no
    student maps); it is left out when that file is gone or changed.

    Args:
        scale: nearest-neighbour upscaling of each panel.
    """
    meta = read_round_meta(root, round_index)
    if meta is None:
        raise StoreError(f"round {round_index}: not in the store")
    axis = int(meta.config["prompts"]["slice_axis"])
    label = read_output(root, round_index, "pseudo_label", volume_id)
    conf = read_output(root, round_index, "confidence", volume_id)
    if label is None or conf is None:
        raise StoreError(f"volume '{volume_id}': round {round_index} has no outputs for it yet")
    image = read_image(root, volume_id)
    student = round_student_probability(meta, image)
    i = _middle_slice(label, axis)
    img = _to_rgb(np.take(image, i, axis))
    panels = [img]
    if student is not None:
        panels.append(_overlay(img, np.take(student, i, axis) > 0.5, (0, 160, 255)))
    panels.append(_overlay(img, np.take(label, i, axis), (255, 60, 60)))
    c = np.take(conf, i, axis).astype(np.float32) / CONFIDENCE_SCALE
    heat = np.stack([c * 255, c * 200, (1 - c) * 120], axis=-1).astype(np.uint8)
    panels.append(heat)
    sep = np.full((img.shape[0], 2, 3), 255, np.uint8)
    row = np.concatenate([p for pair in zip(panels, [sep] * len(panels)) for p in pair][:-1], axis=1)
    Image.fromarray(row).resize((row.shape[1] * scale, row.shape[0] * scale), Image.NEAREST).save(out)
    return Path(out)
