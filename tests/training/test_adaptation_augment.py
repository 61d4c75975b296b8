"""Slice augmentation of the adaptation examples (`AdaptConfig.augment`): each copy is the
labeled slice transformed before encoding with its reference moved alike, and a held-out
slice is never trained on in any form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from semisam.schemas import AdaptConfig, LiteMedSamConfig, RoundConfig
from semisam.store import open_store, read_image, read_label
from semisam.training.adaptation.data import load_adaptation_data
from semisam.training.adaptation.examples import build_tracks, hold_out, slice_variants
from semisam.workers.intensity import window_volume
from semisam.workers.localization import stack_slices
from semisam.workers.maskers.litemedsam import LiteMedSamMasker
from tests.conftest import build_phantom_store

AUGMENT = {"flips": [1], "gammas": [0.7]}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """1 labeled phantom and 1 unlabeled."""
    return build_phantom_store(tmp_path_factory.mktemp("augment") / "s.zarr", count=2, labeled=1,
                               seed=4)


def _identity(slices: np.ndarray) -> torch.Tensor:
    """``NxHxW`` uint8 -> ``Nx1xHxW`` float32: the 'embedding' is the slice itself."""
    return torch.from_numpy(slices.astype(np.float32))[:, None]


def test_each_copy_is_the_transformed_slice_with_its_reference_moved_alike(store):
    root = open_store(store, read_only=True)
    cfg = AdaptConfig(augment=AUGMENT)
    variants = slice_variants(cfg.augment)
    assert [v.name for v in variants] == ["flip1", "gamma0.7"]
    intensity = RoundConfig().intensity
    tracks, examples, emb = build_tracks(root, [("ph00", "label")], [1], [2], intensity, 4, 3,
                                         _identity, variants)
    assert [t.variant for t in tracks] == ["", "flip1", "gamma0.7"]
    assert [t.origin for t in tracks] == [None, 0, 0]
    windowed = window_volume(read_image(root, "ph00"), intensity)
    label = np.asarray(read_label(root, "ph00")) == 1
    per_track = {k: [e for e in examples if e.track == k] for k in range(3)}
    assert len(per_track[0]) == len(per_track[1]) == len(per_track[2]) > 0
    for e in examples:
        track = tracks[e.track]
        image = stack_slices(windowed, [e.index], 2)[0]
        ref = stack_slices(label, [e.index], 2)[0]
        got = emb[e.row, 0].numpy()
        if track.variant == "flip1":
            assert np.array_equal(got, np.flip(image, 1))
        elif track.variant == "gamma0.7":
            assert np.array_equal(got, np.round(255 * (image / 255.0) ** 0.7))
        else:
            assert np.array_equal(got, image)
        if e.index in track.masks:
            want = np.flip(ref, 1) if track.variant == "flip1" else ref
            assert np.array_equal(track.masks[e.index], want)
    # the copies' rows differ from the stored slices' (the flip is not a no-op on a phantom)
    plain = {e.index: e.row for e in per_track[0]}
    assert any(not torch.equal(emb[e.row], emb[plain[e.index]]) for e in per_track[1])
    hold_out(tracks, 0.3, np.random.default_rng(0))
    assert tracks[0].held_out and tracks[1].held_out == tracks[0].held_out == tracks[2].held_out


def test_held_out_slices_are_neither_trained_on_nor_checked_twice(store, tmp_path):
    masker = LiteMedSamMasker(LiteMedSamConfig(embedding_cache=tmp_path / "emb"), "cpu")
    held = {"holdout_fraction": 0.2}  # one labeled volume holds out nothing unless told
    plain = load_adaptation_data(store, masker, AdaptConfig(**held), RoundConfig())
    augmented = load_adaptation_data(store, masker, AdaptConfig(**held, augment=AUGMENT),
                                     RoundConfig())
    assert len(augmented.examples) == 3 * len(plain.examples)
    assert len(augmented.train) == 3 * len(plain.train) and augmented.train_count > plain.train_count
    assert len(augmented.checks) == len(plain.checks) > 0
    assert augmented.held_out_count == plain.held_out_count
    for k in augmented.train:
        e = augmented.examples[k]
        assert e.index not in augmented.tracks[e.track].held_out
    assert all(augmented.tracks[augmented.examples[k].track].origin is None
               for k, _, _ in augmented.checks)
    # the stored slices' embeddings are the plain run's (same cache, same rows first)
    first = augmented.examples[0]
    assert torch.equal(augmented.embeddings[first.row], plain.embeddings[plain.examples[0].row])


@pytest.mark.parametrize("bad, field", [({"flips": [2]}, "flips"), ({"flips": [0, 0]}, "flips"),
                                        ({"gammas": [1.0]}, "gammas"), ({"gammas": [9]}, "gammas")])
def test_a_bad_augmentation_is_refused_naming_the_field(bad, field):
    with pytest.raises(ValidationError, match=field):
        AdaptConfig.model_validate({"augment": bad})
