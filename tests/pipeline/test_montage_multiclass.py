"""Review montages of a multi-class store: each structure in its own colour in the pseudo-label
panel and, as the student's argmax, in the student panel; a legend naming the classes; students
that do not fit refused; the review ranking and the HTML report on class-valued labels; and
one-structure montages drawn as before.

Rounds are written straight through the store API (reference labels as pseudo-labels, an
untrained student checkpoint), so every drawn pixel is known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from semisam.pipeline.ingest import ingest
from semisam.pipeline.phantoms import write_phantom_set
from semisam.pipeline.presentation import inspect as insp
from semisam.pipeline.presentation.inspect import (
    CLASS_COLOURS,
    PSEUDO_LABEL_COLOUR,
    STUDENT_COLOUR,
    class_colour,
    class_colours,
    montage_image,
)
from semisam.pipeline.presentation.report import build_report, round_reference_dice, volume_rows
from semisam.pipeline.presentation.review import rank_round, review_score, worst_volumes
from semisam.schemas import (
    ClassMap,
    InputError,
    RoundConfig,
    RoundMeta,
    VolumeRecord,
    VolumeStats,
    VolumeStatus,
)
from semisam.store import (
    open_store,
    read_image,
    read_output,
    read_reference,
    sha256_file,
    write_outputs,
    write_record,
    write_round_meta,
)
from semisam.workers.student import load_student, predict_probabilities
from tests.conftest import build_phantom_store, untrained_student

NAMES = {1: "left", 2: "middle", 3: "right"}
CAPTION_H = 20  # the caption strip above the panels
VOLUMES = ("phantom_001", "phantom_002")


def _round_meta(root, student: Path) -> None:
    write_round_meta(root, RoundMeta(
        round=1, config=RoundConfig(masker={"kind": "random_walker"}).model_dump(mode="json"),
        fingerprint="f" * 64, student_checkpoint=str(student),
        student_sha256=sha256_file(student) if student.is_file() else "0" * 64))


def _write(root, vid: str, label: np.ndarray, conf_fg: int, dice: float | None) -> None:
    conf = np.where(label > 0, conf_fg, 255).astype(np.uint8)
    sums = write_outputs(root, 1, vid, label.astype(np.uint8), conf, slice_axis=2)
    stats = VolumeStats(slices_total=label.shape[2], slices_prompted=4,
                        foreground_voxels=int(np.count_nonzero(label)), student_masker_dice=dice)
    write_record(root, 1, VolumeRecord(volume_id=vid, status=VolumeStatus.done, stats=stats,
                                       checksums=sums))


@pytest.fixture
def mc_store(tmp_path) -> Path:
    """3-structure phantoms (phantom_000 labeled), round 1 with the references as pseudo-labels
    and a 4-channel (untrained) student of the store's class map."""
    images, labels = write_phantom_set(tmp_path / "src", count=3, shape=(48, 48, 32), classes=3)
    store = tmp_path / "mc.zarr"
    assert ingest(store, [images], labels_dir=labels, labeled={"phantom_000"},
                  classes=ClassMap(names=NAMES)).ok
    root = open_store(store)
    _round_meta(root, untrained_student(tmp_path / "student.pt", 4, NAMES))
    _write(root, "phantom_001", read_reference(root, "phantom_001"), conf_fg=230, dice=0.9)
    _write(root, "phantom_002", read_reference(root, "phantom_002"), conf_fg=120, dice=0.8)
    return store


@pytest.fixture
def captured(monkeypatch) -> list[dict]:
    """What every montage hands to the captioning step: panel captions and class legend."""
    calls: list[dict] = []
    original = insp._captioned

    def spy(row, widths, captions, legend=None):
        calls.append({"captions": list(captions), "legend": legend})
        return original(row, widths, captions, legend)

    monkeypatch.setattr(insp, "_captioned", spy)
    return calls


def _best_slice(label: np.ndarray) -> int:
    """The slice (axis 2) with the most foreground voxels, whatever their class values."""
    return int(np.argmax((label > 0).sum(axis=(0, 1))))


def _panels(img, shape: tuple[int, int], count: int) -> list[np.ndarray]:
    """The ``count`` panels of a scale-1 montage, each ``AxBx3``."""
    arr = np.asarray(img.convert("RGB"))
    a, b = shape
    return [arr[CAPTION_H:CAPTION_H + a, k * (b + 2):k * (b + 2) + b] for k in range(count)]


def _expected_overlay(gray: np.ndarray, label: np.ndarray,
                      colours: dict[int, tuple[int, int, int]]) -> np.ndarray:
    out = gray.astype(np.float32)
    for value, colour in colours.items():
        m = label == value
        out[m] = 0.5 * out[m] + 0.5 * np.array(colour, np.float32)
    return out.astype(np.uint8)


def test_palette_distinct_and_first_is_the_one_structure_colour():
    colours = [class_colour(k) for k in range(40)]
    assert colours[0] == PSEUDO_LABEL_COLOUR
    assert len(set(colours)) == 40  # the fixed palette, then generated hues
    assert colours[:len(CLASS_COLOURS)] == list(CLASS_COLOURS)
    assert class_colours(ClassMap(names={3: "c", 9: "a"})) == {3: CLASS_COLOURS[0],
                                                               9: CLASS_COLOURS[1]}
    # a value the map does not name is drawn after the named ones, theirs unchanged
    assert class_colours(ClassMap(names={3: "c", 9: "a"}), [0, 5]) == {
        3: CLASS_COLOURS[0], 9: CLASS_COLOURS[1], 5: CLASS_COLOURS[2]}


def test_pseudo_label_panel_colours_each_class(mc_store, captured):
    root = open_store(mc_store, read_only=True)
    label = read_output(root, 1, "pseudo_label", "phantom_001")
    sl = label[:, :, _best_slice(label)]
    assert set(np.unique(sl).tolist()) == {0, 1, 2, 3}  # all three structures on the slice
    img = montage_image(root, 1, "phantom_001", scale=1, student=False)
    gray, pseudo, _ = _panels(img, sl.shape, 3)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    colours = {v: CLASS_COLOURS[k] for k, v in enumerate(NAMES)}
    assert len(set(colours.values())) == 3
    np.testing.assert_array_equal(pseudo, _expected_overlay(gray, sl, colours))
    # each class's pixels carry its own colour (half image, half colour) and no other's
    for v in colours:
        tint = 2 * pseudo[sl == v].astype(float) - gray[sl == v].astype(float)
        dist = {w: np.abs(tint - np.array(c)).mean() for w, c in colours.items()}
        assert min(dist, key=dist.get) == v and dist[v] < 2, (v, dist)
    np.testing.assert_array_equal(pseudo[sl == 0], gray[sl == 0])
    # the legend names the classes in their colours, in a strip below the panels
    assert captured[-1]["legend"] == [(NAMES[v], colours[v]) for v in (1, 2, 3)]
    assert captured[-1]["captions"] == ["image", "pseudo-label", "confidence"]
    arr = np.asarray(img.convert("RGB"))
    assert arr.shape[0] > CAPTION_H + sl.shape[0]
    strip = arr[CAPTION_H + sl.shape[0]:]
    for colour in colours.values():
        assert (strip == np.array(colour, np.uint8)).all(axis=-1).sum() >= 80, colour


def test_slice_with_most_foreground_counts_voxels_not_class_values(mc_store):
    """100 voxels of class 1 on slice 5 outnumber 60 of class 3 on slice 20 (whose values sum
    higher): the montage shows slice 5."""
    root = open_store(mc_store)
    label = np.zeros((48, 48, 32), np.uint8)
    label[10:20, 10:20, 5] = 1
    label[30:36, 30:40, 20] = 3
    _write(root, "phantom_002", label, conf_fg=100, dice=0.5)
    img = montage_image(root, 1, "phantom_002", scale=1, student=False)
    gray, pseudo, _ = _panels(img, (48, 48), 3)
    np.testing.assert_array_equal(pseudo, _expected_overlay(gray, label[:, :, 5],
                                                            class_colours(ClassMap(names=NAMES))))


def test_student_panel_is_its_argmax_in_the_class_colours(mc_store, captured):
    root = open_store(mc_store, read_only=True)
    label = read_output(root, 1, "pseudo_label", "phantom_001")
    i = _best_slice(label)
    swapped = np.asarray([0, 3, 2, 1], np.uint8)[label]  # the student calls left right
    probs = np.zeros((4, *label.shape), np.float32)
    for c in range(4):
        probs[c] = np.where(swapped == c, 0.7, 0.1)
    colours = class_colours(ClassMap(names=NAMES))
    img = montage_image(root, 1, "phantom_001", scale=1, student=probs)
    gray, student, pseudo, _ = _panels(img, label.shape[:2], 4)
    np.testing.assert_array_equal(student, _expected_overlay(gray, swapped[:, :, i], colours))
    np.testing.assert_array_equal(pseudo, _expected_overlay(gray, label[:, :, i], colours))
    assert not np.array_equal(student, pseudo)
    assert captured[-1]["captions"] == ["image", "student (argmax)", "pseudo-label", "confidence"]
    # class values as they are draw the same panel
    same = montage_image(root, 1, "phantom_001", scale=1, student=swapped)
    assert np.array_equal(np.asarray(same), np.asarray(img))
    with pytest.raises(InputError, match="needs its 4xXxYxZ softmax"):
        montage_image(root, 1, "phantom_001", student=probs[1])  # one float channel


def test_student_panel_recomputed_from_the_roundsuntrained_student(mc_store, tmp_path, captured):
    root = open_store(mc_store, read_only=True)
    label = read_output(root, 1, "pseudo_label", "phantom_002")
    i = _best_slice(label)
    img = montage_image(root, 1, "phantom_002", scale=1)
    model, spec, _ = load_student(tmp_path / "student.pt")
    probs = predict_probabilities(model, read_image(root, "phantom_002"), spec, RoundConfig().student)
    argmax = np.asarray([0, 1, 2, 3], np.uint8)[probs.argmax(axis=0)]
    gray, student, _, _ = _panels(img, label.shape[:2], 4)
    np.testing.assert_array_equal(
        student, _expected_overlay(gray, argmax[:, :, i], class_colours(ClassMap(names=NAMES))))
    assert captured[-1]["captions"][1] == "student (argmax)"


def test_students_that_do_not_fit_the_store_are_refused(mc_store, tmp_path):
    root = open_store(mc_store)
    _round_meta(root, untrained_student(tmp_path / "binary.pt", 2, None))
    with pytest.raises(InputError, match="2 output channels, but the store has 3 class"):
        montage_image(root, 1, "phantom_001")
    _round_meta(root, untrained_student(tmp_path / "other.pt", 4, {1: "a", 2: "b", 3: "c"}))
    with pytest.raises(InputError, match=r"trained on classes \(1=a, 2=b, 3=c\), but the store"):
        montage_image(root, 1, "phantom_001")
    # a gone checkpoint: the panel is left out, as for one structure
    _round_meta(root, tmp_path / "gone.pt")
    assert montage_image(root, 1, "phantom_001", scale=1).size[0] == 3 * 48 + 2 * 2 + 46


def test_review_ranking_and_pngs_on_class_values(mc_store, tmp_path):
    root = open_store(mc_store, read_only=True)
    items = rank_round(root, 1)
    assert [it.volume_id for it in items] == ["phantom_002", "phantom_001"]  # lower confidence
    for it in items:
        label = read_output(root, 1, "pseudo_label", it.volume_id)
        conf = read_output(root, 1, "confidence", it.volume_id)
        assert it.foreground_voxels == int(np.count_nonzero(label)) < int(label.sum())
        assert review_score(label, conf, 0.5) == review_score((label > 0).astype(np.uint8), conf, 0.5)
    written = worst_volumes(root, 1, 2, tmp_path / "png")
    from PIL import Image

    with Image.open(written[0].png) as im:
        assert im.size[1] > CAPTION_H + 48 * 3  # the legend strip below the scale-3 panels


def test_report_legend_classes_and_per_class_reference_dice(mc_store):
    root = open_store(mc_store)
    ref = read_reference(root, "phantom_002")
    swapped = np.asarray([0, 3, 2, 1], np.uint8)[ref]  # left and right exchanged
    _write(root, "phantom_002", swapped, conf_fg=120, dice=0.8)
    rows = {r["volume"]: r for r in volume_rows(root, 1)[0]}
    assert rows["phantom_001"]["reference_dice"] == 1.0
    # foreground vs foreground would be 1.0; per class, only "middle" is right
    assert rows["phantom_002"]["reference_dice"] == pytest.approx(1 / 3, abs=1e-4)
    assert round_reference_dice(root)[1] == pytest.approx((1 + 1 / 3) / 2, abs=1e-4)
    page = build_report(mc_store, 1, worst=1, student_panels=False)
    assert '<p class="legend" id="class-legend">' in page
    for k, name in enumerate(("left", "middle", "right")):
        assert f"background:rgb{CLASS_COLOURS[k]}\"></span>{name}" in page
    assert "<td>classes</td><td>1=left, 2=middle, 3=right</td>" in page
    assert "mean over the classes" in page


def test_one_structure_montage_drawn_as_before(tmp_path, captured):
    store = build_phantom_store(tmp_path / "one.zarr", count=2, labeled=1, seed=3)
    root = open_store(store)
    _round_meta(root, tmp_path / "gone.pt")
    ref = read_reference(root, "ph01")
    _write(root, "ph01", ref, conf_fg=200, dice=0.9)
    prob = np.where(np.roll(ref, 3, axis=0) > 0, 0.8, 0.2).astype(np.float32)
    img = montage_image(root, 1, "ph01", scale=1, student=prob)
    i = _best_slice(ref)
    gray, student, pseudo, _ = _panels(img, ref.shape[:2], 4)
    np.testing.assert_array_equal(student, _expected_overlay(gray, prob[:, :, i] > 0.5,
                                                             {True: STUDENT_COLOUR}))
    np.testing.assert_array_equal(pseudo, _expected_overlay(gray, ref[:, :, i], {1: PSEUDO_LABEL_COLOUR}))
    assert img.size[1] == CAPTION_H + ref.shape[0]  # no legend strip
    assert captured[-1] == {"captions": ["image", "student (p > 0.5)", "pseudo-label", "confidence"],
                            "legend": None}
    page = build_report(store, 1, worst=1, student_panels=False)
    assert ("Panels: image | student (p &gt; 0.5, blue) | pseudo-label (red) | confidence"
            in page) and "class-legend" not in page
