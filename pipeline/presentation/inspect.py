"""`inspect`: what is in a store, per round and per volume, and overlay montages (coloured per
class in a multi-class store)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zarr
from PIL import Image

from semisam.schemas import (
    CONFIDENCE_SCALE,
    ClassMap,
    InputError,
    RoundMeta,
    StoreError,
    StrictModel,
)
from semisam.store import (
    list_metas,
    list_rounds,
    read_class_map,
    read_image,
    read_output,
    read_round_meta,
)

from ..rounds.summary import RoundSummary, summarize_round

if TYPE_CHECKING:
    from semisam.workers.student_model import Student

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


def round_student(meta: RoundMeta) -> Student | None:
    """The round's student (on the CPU) if its checkpoint is still there, unchanged (same
    sha256 as the round recorded); None when it is gone or changed."""
    from semisam.store import sha256_file
    from semisam.workers.student_model import Student

    path = Path(meta.student_checkpoint)
    try:
        if not path.is_file() or sha256_file(path) != meta.student_sha256:
            return None
    except OSError:  # unreadable: as good as gone
        return None
    return Student.load(path)


def round_student_probability(meta: RoundMeta, image: np.ndarray,
                              classes: ClassMap | None = None) -> np.ndarray | None:
    """Re-run the round's student on ``image`` (``XxYxZ``) if its checkpoint is still there,
    unchanged; None when it is not.

    Returns:
        One-structure ``classes`` (or None): ``XxYxZ`` float32 foreground probability; a
        multi-class map of ``K`` structures: the ``(K+1)xXxYxZ`` float32 softmax (channel
        ``c`` the class value ``classes.values[c - 1]``, channel 0 the background).

    Raises:
        InputError: a multi-class map and a student without ``K + 1`` channels, or one whose
            checkpoint records another class map.
    """
    from semisam.schemas import RoundConfig

    student = round_student(meta)
    if student is None:
        log.info("student panel left out: %s is gone or changed since the round",
                 Path(meta.student_checkpoint))
        return None
    if classes is not None:
        student.check_fits(classes)
    return student.probabilities(image, RoundConfig.model_validate(meta.config).student, classes)


PANEL_CAPTIONS = {"image": "image", "student": "student (p > 0.5)",
                  "pseudo_label": "pseudo-label", "confidence": "confidence"}
STUDENT_COLOUR = (0, 160, 255)
PSEUDO_LABEL_COLOUR = (255, 60, 60)
MULTICLASS_STUDENT_CAPTION = "student (argmax)"
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    PSEUDO_LABEL_COLOUR,  # red: the first (or only) class keeps the one-structure colour
    (40, 200, 70),  # green
    (40, 110, 255),  # blue
    (255, 205, 0),  # yellow
    (190, 70, 255),  # purple
    (0, 215, 215),  # cyan
    (255, 135, 0),  # orange
    (255, 90, 200),  # pink
    (150, 95, 35),  # brown
    (165, 255, 80),  # lime
)
"""Overlay colours of a multi-class store's structures, by class order (ascending value)."""
_LEGEND_H = 18  # one line of the class legend below the panels (multi-class stores)
_CAPTION_H = 20
_SCALE_W = 46  # the confidence colour scale right of the panels: bar + tick labels


def confidence_colours(c: np.ndarray) -> np.ndarray:
    """The montage's confidence colour map: ``c`` in [0, 1] -> RGB uint8 (dark blue 0 -> yellow 1)."""
    c = np.asarray(c, np.float32)
    return np.stack([c * 255, c * 200, (1 - c) * 120], axis=-1).astype(np.uint8)


def class_colour(index: int) -> tuple[int, int, int]:
    """Overlay colour of the ``index``-th structure (0-based, ascending class value): the fixed
    `CLASS_COLOURS`, then golden-angle hues for stores with more structures than those."""
    if index < 0:
        raise ValueError(f"class index must be >= 0, got {index}")
    if index < len(CLASS_COLOURS):
        return CLASS_COLOURS[index]
    import colorsys

    hue = ((index - len(CLASS_COLOURS)) * 0.618033988749895 + 0.05) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def class_colours(classes: ClassMap, extra: Iterable[int] = ()) -> dict[int, tuple[int, int, int]]:
    """Class value -> overlay colour: the map's classes in their order, then any ``extra``
    values a label holds that the map does not name (0 never gets a colour)."""
    values = list(classes.values)
    values += sorted({int(v) for v in extra} - set(values) - {0})
    return {v: class_colour(k) for k, v in enumerate(values)}


def _overlay_classes(rgb: np.ndarray, label: np.ndarray,
                     colours: dict[int, tuple[int, int, int]]) -> np.ndarray:
    """``rgb`` (``AxBx3`` uint8) with each class ``v`` of ``label`` (``AxB`` class values)
    blended half and half with ``colours[v]``; values without a colour are left as they are."""
    out = rgb.astype(np.float32)
    for value, colour in colours.items():
        m = label == value
        out[m] = 0.5 * out[m] + 0.5 * np.array(colour, np.float32)
    return out.astype(np.uint8)


def student_class_slice(student: np.ndarray, index: int, axis: int,
                        classes: ClassMap) -> np.ndarray:
    """The student's class values on slice ``index`` of ``axis`` (an ``AxB`` uint8 map).

    Args:
        student: ``(K+1)xXxYxZ`` softmax (the argmax, channel ``c`` -> ``classes.values[c - 1]``,
            0 -> background); ``XxYxZ`` integer class values (as they are); or, for a map of one
            structure, its ``XxYxZ`` float probability (``> 0.5`` -> that class's value).

    Raises:
        InputError: an array of another shape or kind.
    """
    student = np.asarray(student)
    values = np.asarray([0, *classes.values], np.uint8)
    if student.ndim == 4 and student.shape[0] == classes.count + 1:
        return values[np.argmax(np.take(student, index, axis + 1), axis=0)]
    if student.ndim == 3 and np.issubdtype(student.dtype, np.integer):
        return np.take(student, index, axis).astype(np.uint8)
    if student.ndim == 3 and classes.count == 1:
        return np.where(np.take(student, index, axis) > 0.5, values[1], 0).astype(np.uint8)
    raise InputError(f"student map of shape {student.shape} ({student.dtype}): a store of "
                     f"{classes.count} classes needs its {classes.count + 1}xXxYxZ softmax or "
                     "XxYxZ integer class values")


def _font(size: int = 12):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font, one size
        return ImageFont.load_default()


def _legend_lines(entries: list[tuple[str, tuple[int, int, int]]], width: int,
                  font) -> list[list[tuple[float, str, tuple[int, int, int]]]]:
    """The legend's ``(x, name, colour)`` entries wrapped into lines ``width`` pixels wide."""
    from PIL import ImageDraw

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[list[tuple[float, str, tuple[int, int, int]]]] = [[]]
    x = 4.0
    for name, colour in entries:
        w = 16 + measure.textlength(name, font=font) + 12  # swatch, gap, name, gap
        if lines[-1] and x + w > width:
            lines.append([])
            x = 4.0
        lines[-1].append((x, name, colour))
        x += w
    return lines


def _captioned(row: np.ndarray, widths: list[int], captions: list[str],
               legend: list[tuple[str, tuple[int, int, int]]] | None = None) -> Image.Image:
    """``row`` (panels side by side, ``widths`` pixels each with 2-pixel gaps) with a caption
    strip above each panel and the confidence colour scale (0 .. 1) on the right; with
    ``legend`` (``(name, colour)`` per class), a strip below naming each class by its colour."""
    from PIL import ImageDraw

    h, w = row.shape[:2]
    font = _font()
    lines = _legend_lines(legend, w + _SCALE_W, font) if legend else []
    extra = _LEGEND_H * len(lines) + 2 if lines else 0
    canvas = Image.new("RGB", (w + _SCALE_W, h + _CAPTION_H + extra), (255, 255, 255))
    canvas.paste(Image.fromarray(row), (0, _CAPTION_H))
    draw = ImageDraw.Draw(canvas)
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
    for k, line in enumerate(lines):
        y = _CAPTION_H + h + 2 + k * _LEGEND_H
        for lx, name, colour in line:
            draw.rectangle((lx, y + 3, lx + 11, y + 13), fill=colour, outline=(0, 0, 0))
            draw.text((lx + 16, y + 2), name, fill=(0, 0, 0), font=font)
    return canvas


def _panels(image: np.ndarray, label: np.ndarray, conf: np.ndarray, student: np.ndarray | None,
            i: int, axis: int, classes: ClassMap,
            colours: dict[int, tuple[int, int, int]]) -> tuple[list[np.ndarray], list[str]]:
    """`montage_image`'s panels of slice ``i`` along ``axis`` (each ``HxWx3`` uint8) and their
    captions: image, student (when ``student`` is given), pseudo-label, confidence."""
    img = _to_rgb(np.take(image, i, axis))
    label_slice = np.take(label, i, axis)
    panels, captions = [img], [PANEL_CAPTIONS["image"]]
    if student is not None:
        if classes.multiclass:
            panels.append(_overlay_classes(img, student_class_slice(student, i, axis, classes),
                                           colours))
            captions.append(MULTICLASS_STUDENT_CAPTION)
        else:
            panels.append(_overlay(img, np.take(student, i, axis) > 0.5, STUDENT_COLOUR))
            captions.append(PANEL_CAPTIONS["student"])
    if classes.multiclass:
        panels.append(_overlay_classes(img, label_slice, colours))
    else:
        panels.append(_overlay(img, label_slice, PSEUDO_LABEL_COLOUR))
    captions.append(PANEL_CAPTIONS["pseudo_label"])
    panels.append(confidence_colours(np.take(conf, i, axis).astype(np.float32) / CONFIDENCE_SCALE))
    captions.append(PANEL_CAPTIONS["confidence"])
    return panels, captions


def montage_image(root: zarr.Group, round_index: int, volume_id: str, scale: int = 3,
                  student: np.ndarray | None | bool = True) -> Image.Image:
    """Panels image | student | pseudo-label | confidence on the slice with the most
    pseudo-label foreground (``label > 0``), each captioned, with the confidence colour scale
    on the right.

    One-structure stores: the pseudo-label in `PSEUDO_LABEL_COLOUR`, the student's ``p > 0.5``
    in `STUDENT_COLOUR`. Multi-class stores (`semisam.store.read_class_map`): each structure in
    its own colour (`class_colours`, the first class in `PSEUDO_LABEL_COLOUR`) in both the
    pseudo-label and the student panel (the student's argmax), and a legend strip below the
    panels naming every structure by its colour.

    The student panel is recomputed from the round's student checkpoint (the store keeps no
    student maps); it is left out when that file is gone or changed.

    Args:
        scale: nearest-neighbour upscaling of each panel.
        student: True: recompute the student's map; False: leave the panel out; an array:
            the student's map to draw: one-structure stores its ``XxYxZ`` foreground
            probability, multi-class stores its ``(K+1)xXxYxZ`` softmax or ``XxYxZ`` integer
            class values (`student_class_slice`).

    Raises:
        StoreError: no such round, or no outputs of the volume in it.
        InputError: a multi-class store and a student that does not fit its classes.
    """
    meta = read_round_meta(root, round_index)
    if meta is None:
        raise StoreError(f"round {round_index}: not in the store")
    axis = int(meta.config["prompts"]["slice_axis"])
    label = read_output(root, round_index, "pseudo_label", volume_id)
    conf = read_output(root, round_index, "confidence", volume_id)
    if label is None or conf is None:
        raise StoreError(f"volume '{volume_id}': round {round_index} has no outputs for it yet")
    classes = read_class_map(root)
    multi = classes.multiclass
    image = read_image(root, volume_id)
    if student is True:
        student = round_student_probability(meta, image, classes)
    elif student is False:
        student = None
    i = _middle_slice(label > 0, axis)
    colours = class_colours(classes, np.unique(np.take(label, i, axis))) if multi else {}
    panels, captions = _panels(image, label, conf, student, i, axis, classes, colours)
    big = [np.repeat(np.repeat(p, scale, axis=0), scale, axis=1) for p in panels]
    sep = np.full((big[0].shape[0], 2, 3), 255, np.uint8)
    row = np.concatenate([p for pair in zip(big, [sep] * len(big)) for p in pair][:-1], axis=1)
    legend = [(classes.name(v), c) for v, c in colours.items()] if multi else None
    return _captioned(row, [p.shape[1] for p in big], captions, legend)


def write_montage(root: zarr.Group, round_index: int, volume_id: str, out: Path,
                  scale: int = 3) -> Path:
    """`montage_image` as a PNG file: image | student | pseudo-label | confidence, captioned,
    with the confidence colour scale (multi-class stores: coloured per class, with a legend)."""
    montage_image(root, round_index, volume_id, scale).save(out, format="PNG")
    return Path(out)
