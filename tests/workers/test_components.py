"""The wrong-structure guard: the student's component that fits the labeled volumes' location and
size prior is kept instead of the largest (`PromptConfig.component = 'prior'`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from semisam.pipeline.phantoms import make_phantom
from semisam.schemas import RoundConfig, VolumeMeta
from semisam.store import open_store, read_output, read_round_meta, write_volume
from semisam.workers.components import (
    PLAUSIBLE_SCORE,
    choose_component,
    fit_prior,
    keep_component,
    normalised_centroid,
    prior_score,
    with_store_priors,
)
from semisam.workers.volume import VolumeProcessor
from tests.conftest import PHANTOM_SHAPE, SPACING, phantom_affine

BOX = (slice(32, 47), slice(4, 44), slice(2, 30))  # clear of seed 102's structure (x 9..29)


def _ball(shape, centre, radius) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2


def test_fit_prior_means_spreads_and_floors() -> None:
    shape = (40, 40, 20)
    a, b = _ball(shape, (10, 20, 10), 4), _ball(shape, (14, 20, 10), 4)
    prior = fit_prior([(a, (1.0, 1.0, 2.0)), (b, (1.0, 1.0, 2.0)), (np.zeros(shape, bool), (1, 1, 1))])
    assert prior is not None and prior.volumes == 2  # the empty mask is left out
    assert prior.centroid == pytest.approx((12 / 39, 20 / 39, 10 / 19))
    assert prior.centroid_std[0] == pytest.approx(0.1)  # spread 2/39 < floor
    assert prior.log_volume == pytest.approx(np.log(a.sum() * 2.0))
    assert prior.log_volume_std == pytest.approx(0.5)
    assert fit_prior([(np.zeros(shape, bool), (1, 1, 1))]) is None


def test_the_prior_picks_the_component_where_the_structure_lies() -> None:
    shape = (60, 40, 20)
    small, big = _ball(shape, (12, 20, 10), 5), _ball(shape, (45, 20, 10), 8)
    mask = small | big
    prior = fit_prior([(_ball(shape, (13, 19, 10), 5), (1, 1, 1))])
    assert np.array_equal(choose_component(mask, (1, 1, 1), None), big)
    assert np.array_equal(choose_component(mask, (1, 1, 1), prior), small)
    assert normalised_centroid(small) == pytest.approx((12 / 59, 20 / 39, 10 / 19))
    # at the same place, size decides: a structure of the big ball's volume picks the big ball
    prior_big = fit_prior([(_ball(shape, (30, 20, 10), 8), (1, 1, 1))])
    assert np.array_equal(choose_component(mask, (1, 1, 1), prior_big), big)


def test_a_plausible_largest_component_stays_even_where_another_fits_better() -> None:
    """A guard: the largest is replaced only when it is more than ~3 spreads off the prior."""
    shape = (60, 40, 20)
    near, big = _ball(shape, (20, 20, 10), 6), _ball(shape, (40, 20, 10), 7)  # 0.34 vs 0.68
    prior = fit_prior([(_ball(shape, (26, 20, 10), 6), (1, 1, 1))])
    assert prior is not None
    scores = [prior_score(normalised_centroid(m), int(m.sum()), (1, 1, 1), prior) for m in (near, big)]
    assert scores[0] > scores[1] > PLAUSIBLE_SCORE  # the near one fits better; the big one is plausible
    assert np.array_equal(choose_component(near | big, (1, 1, 1), prior), big)


def test_keep_component_lowers_the_others_to_the_threshold() -> None:
    shape = (60, 40, 20)
    small, big = _ball(shape, (12, 20, 10), 5), _ball(shape, (45, 20, 10), 8)
    prob = np.where(small | big, 0.9, 0.1).astype(np.float32)
    prior = fit_prior([(small, (1, 1, 1))])
    out = keep_component(prob, 0.5, (1, 1, 1), prior)
    assert np.all(out[big] == np.float32(0.5)) and np.all(out[small] == np.float32(0.9))
    assert np.array_equal(out[~big], prob[~big]) and prob[big].min() == np.float32(0.9)
    assert keep_component(np.where(small, 0.9, 0.1), 0.5, (1, 1, 1), prior) is not None
    single = np.where(small, 0.9, 0.1)
    assert keep_component(single, 0.5, (1, 1, 1), prior) is single  # nothing to drop: no copy


def _store_with_a_bigger_lookalike(path: Path) -> tuple[Path, np.ndarray]:
    """2 labeled phantoms and one unlabeled phantom (seed 102) with a bright box larger than its
    structure, placed clear of it: a student that segments bright regions finds both."""
    root = open_store(path, create=True)
    for i, seed in enumerate((0, 1, 102)):
        image, label = make_phantom(PHANTOM_SHAPE, seed=seed)
        labeled = i < 2
        if not labeled:
            image[BOX] = np.maximum(image[BOX], np.percentile(image[label > 0], 50))
        meta = VolumeMeta(volume_id=f"v{i}", source=f"phantom:{seed}", source_format="npy",
                          sha256=str(seed), shape=image.shape, spacing=SPACING,
                          affine=phantom_affine().tolist(), image_dtype="float32", labeled=labeled)
        write_volume(root, meta, image, label if labeled else None)
        if not labeled:
            reference = label > 0
    return path, reference


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def test_a_round_with_the_prior_keeps_the_structure_not_the_bigger_lookalike(
        tmp_path: Path, trained_student: Path) -> None:
    store, reference = _store_with_a_bigger_lookalike(tmp_path / "s.zarr")
    root = open_store(store)
    labels = {}
    for component in ("largest", "prior"):
        cfg = RoundConfig(masker={"kind": "random_walker"}, prompts={"component": component})
        cfg = with_store_priors(cfg, root)
        assert (cfg.prompts.component_prior is not None) == (component == "prior")
        r = 1 if component == "largest" else 2
        record = VolumeProcessor(str(store), r, cfg, trained_student).process("v2")
        assert record.status.value == "done", record.error
        labels[component] = read_output(open_store(store, read_only=True), r, "pseudo_label",
                                        "v2") > 0
    box = np.zeros(PHANTOM_SHAPE, bool)
    box[BOX] = True
    # the student found the lookalike, and it is the larger: by size the round takes it
    assert np.count_nonzero(labels["largest"] & box) > 0.5 * np.count_nonzero(labels["largest"])
    assert _dice(labels["largest"], reference) < 0.3
    # by the prior the round takes the structure, and labels nothing in the lookalike
    assert not (labels["prior"] & box).any()
    assert _dice(labels["prior"], reference) > 0.7


def test_the_round_records_its_prior_and_a_largest_round_keeps_its_fingerprint(
        phantom_store: Path, trained_student: Path) -> None:
    from semisam.pipeline.rounds.driver import run_round

    largest = RoundConfig(masker={"kind": "random_walker"}, prompts={"component": "largest"})
    assert "component" not in largest.fingerprint_payload()["prompts"]
    assert RoundConfig().prompts.component == "prior"  # the default
    cfg = RoundConfig(masker={"kind": "random_walker"}, prompts={"component": "prior"},
                      runtime={"workers": 1})
    summary = run_round(phantom_store, 1, trained_student, cfg, show_progress=False)
    assert summary.failed == 0 and summary.done == 4
    meta = read_round_meta(open_store(phantom_store, read_only=True), 1)
    assert meta is not None and meta.status.value == "finished"
    prior = meta.config["prompts"]["component_prior"]
    assert set(prior) == {"1"} and prior["1"]["volumes"] == 2  # the store's 2 labeled phantoms
    # the prior is fitted again on a rerun, gives the same fingerprint, and nothing is redone
    again = run_round(phantom_store, 1, trained_student, cfg, show_progress=False)
    assert again.done == 4 and again.skipped == 4


def test_train_records_the_labeled_volumes_prior_in_the_student(trained_student: Path) -> None:
    from semisam.workers.components import checkpoint_priors
    from semisam.workers.student import read_checkpoint

    priors = checkpoint_priors(read_checkpoint(trained_student)["meta"])
    assert set(priors) == {1} and priors[1].volumes == 3  # the fixture's 3 labeled phantoms
    assert all(0.3 < c < 0.7 for c in priors[1].centroid)  # phantoms sit near the middle


def test_predict_prior_component_keeps_the_structure(tmp_path: Path, trained_student: Path) -> None:
    import nibabel as nib
    import torch

    from semisam.pipeline.predict import PredictOptions, predict
    from semisam.schemas import ConfigError
    from semisam.workers.student import read_checkpoint

    image, label = make_phantom(PHANTOM_SHAPE, seed=102)
    image[BOX] = np.maximum(image[BOX], np.percentile(image[label > 0], 50))
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(image, phantom_affine()), str(scan))
    out = {}
    for name, options in (("largest", PredictOptions(largest_component=True)),
                          ("prior", PredictOptions(prior_component=True))):
        report = predict(trained_student, [scan], tmp_path / name, options=options, device="cpu")
        assert report.items[0].status.value == "written", report.items[0].reason
        out[name] = np.asarray(nib.load(report.items[0].label).dataobj) > 0
    box = np.zeros(PHANTOM_SHAPE, bool)
    box[BOX] = True
    assert np.count_nonzero(out["largest"] & box) > 0.5 * np.count_nonzero(out["largest"])
    assert not (out["prior"] & box).any() and _dice(out["prior"], label > 0) > 0.7
    # a checkpoint without a recorded prior is refused before any scan, in one line
    payload = read_checkpoint(trained_student)
    del payload["meta"]["component_prior"]
    bare = tmp_path / "bare.pt"
    torch.save(payload, bare)
    with pytest.raises(ConfigError, match=r"--prior-component: .*bare\.pt records no component prior"):
        predict(bare, [scan], tmp_path / "bare", options=PredictOptions(prior_component=True),
                device="cpu")
    assert not (tmp_path / "bare").exists()
