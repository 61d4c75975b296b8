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


PANEL_CAPTIONS = {"image": "image", "student": "student (p > 0.5)",
                  "pseudo_label": "pseudo-label", "confidence": "confidence"}
STUDENT_COLOUR = (0, 160, 255)
PSEUDO_LABEL_COLOUR = (255, 60, 60)
_CAPTION_H = 20
_SCALE_W = 46  # the confidence colour scale right of the panels: bar + tick labels


def confidence_colours(c: np.ndarray) -> np.ndarray:
    """The montage's confidence colour map: ``c`` in [0, 1] -> RGB uint8 (dark blue 0 -> yellow 1)."""
    c = np.asarray(c, np.float32)
    return np.stack([c * 255, c * 200, (1 - c) * 120], axis=-1).astype(np.uint8)


def _font(size: int = 12):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font, one size
        return ImageFont.load_default()


def _captioned(row: np.ndarray, widths: list[int], captions: list[str]) -> Image.Image:
    """``row`` (panels side by side, ``widths`` pixels each with 2-pixel gaps) with a caption
    strip above each panel and the confidence colour scale (0 .. 1) on the right."""
    from PIL import ImageDraw

    h, w = row.shape[:2]
    canvas = Image.new("RGB", (w + _SCALE_W, h + _CAPTION_H), (255, 255, 255))
    canvas.paste(Image.fromarray(row), (0, _CAPTION_H))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    x = 0
    for width, text in zip(widths, captions):
        tw = draw.textlength(text, font=font)
        draw.text((x + max(0, (width - tw) / 2), 3), text, fill=(0, 0, 0), font=font)
        x += width + 2
    bar = confidence_colours(np.linspace(1, 0, h)[:, None].repeat(10, axis=1))
    canvas.paste(Image.fromarray(bar), (w + 6, _CAPTION_H))
    draw.text((w + 18, _CAPTION_H - 2), "1", fill=(0, 0, 0), font=font)
    draw.text((w + 18, _CAPTION_H + h - 12), "0", fill=(0, 0, 0), font=font)
    draw.text((w + 2, 3), "conf", fill=(0, 0, 0), font=font)
    return canvas


def montage_image(root: zarr.Group, round_index: int, volume_id: str, scale: int = 3,
                  student: np.ndarray | None | bool = True) -> Image.Image:
    """Panels image | student | pseudo-label | confidence on the slice with the most
    pseudo-label foreground, each captioned, with the confidence colour scale on the right.

    The student panel is recomputed from the round's student checkpoint (the store keeps no
    student maps); it is left out when that file is gone or changed.

    Args:
        scale: nearest-neighbour upscaling of each panel.
        student: True: recompute the student's map; False: leave the panel out; an array:
            the student's probability map to draw.
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
    if student is True:
        student = round_student_probability(meta, image)
    elif student is False:
        student = None
    i = _middle_slice(label, axis)
    img = _to_rgb(np.take(image, i, axis))
    panels, captions = [img], [PANEL_CAPTIONS["image"]]
    if student is not None:
        panels.append(_overlay(img, np.take(student, i, axis) > 0.5, STUDENT_COLOUR))
        captions.append(PANEL_CAPTIONS["student"])
    panels.append(_overlay(img, np.take(label, i, axis), PSEUDO_LABEL_COLOUR))
    captions.append(PANEL_CAPTIONS["pseudo_label"])
    panels.append(confidence_colours(np.take(conf, i, axis).astype(np.float32) / CONFIDENCE_SCALE))
    captions.append(PANEL_CAPTIONS["confidence"])
    big = [np.repeat(np.repeat(p, scale, axis=0), scale, axis=1) for p in panels]
    sep = np.full((big[0].shape[0], 2, 3), 255, np.uint8)
    row = np.concatenate([p for pair in zip(big, [sep] * len(big)) for p in pair][:-1], axis=1)
    return _captioned(row, [p.shape[1] for p in big], captions)


def write_montage(root: zarr.Group, round_index: int, volume_id: str, out: Path,
                  scale: int = 3) -> Path:
    """`montage_image` as a PNG file: image | student | pseudo-label | confidence, captioned,
    with the confidence colour scale."""
    montage_image(root, round_index, volume_id, scale).save(out, format="PNG")
    return Path(out)
