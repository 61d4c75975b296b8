"""LiteMedSAM's embedding cache: a cached run equals the run that filled it, skips the encoder,
keys by pixels and weights, and survives a corrupt entry."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from semisam.schemas import LiteMedSamConfig, RoundConfig
from semisam.workers.maskers.litemedsam import LiteMedSamMasker, load_litemedsam
from semisam.workers.maskers.litemedsam.embedding_cache import slice_key, state_dict_key

from .test_litemedsam_encoder import phantoms

torch.set_num_threads(2)
CPU = torch.device("cpu")


def _masker(model, cache: Path | None) -> LiteMedSamMasker:
    return LiteMedSamMasker(LiteMedSamConfig(batch_size=2, embedding_cache=cache), CPU, model=model)


def _counting(masker: LiteMedSamMasker) -> list[int]:
    """Wrap ``masker.encode``; the list collects the batch size of every encoder call."""
    calls: list[int] = []
    encode = masker.encode

    def counted(slices: np.ndarray) -> torch.Tensor:
        calls.append(len(slices))
        return encode(slices)

    masker.encode = counted
    return calls


def test_second_session_decodes_only_and_matches_uncached(litemedsam_model, tmp_path):
    slices, prompts = phantoms(3)
    plain = _masker(litemedsam_model, None).session(slices).mask([0, 1, 2], prompts)
    first = _masker(litemedsam_model, tmp_path)
    filled = first.session(slices).mask([0, 1, 2], prompts)
    assert (first.cache.misses, first.cache.hits) == (3, 0)
    second = _masker(litemedsam_model, tmp_path)
    calls = _counting(second)
    again = second.session(slices).mask([0, 1, 2], prompts)
    assert calls == [] and second.cache.hits == 3
    np.testing.assert_array_equal(again[0], filled[0])
    np.testing.assert_array_equal(again[1], filled[1])
    np.testing.assert_array_equal(filled[0], plain[0])  # same batches as without a cache


def test_only_new_slices_are_encoded(litemedsam_model, tmp_path):
    slices, prompts = phantoms(3)
    _masker(litemedsam_model, tmp_path).session(slices[:2])
    masker = _masker(litemedsam_model, tmp_path)
    calls = _counting(masker)
    changed = slices.copy()
    changed[0, 0, 0] ^= 1  # one pixel: another slice
    masker.session(changed)
    assert calls == [2]  # slice 0 (changed) and slice 2 (never seen) in one batch
    assert (masker.cache.hits, masker.cache.misses) == (1, 2)


def test_scored_masks_use_the_cache(litemedsam_model, tmp_path):
    slices, prompts = phantoms(2)
    filled = _masker(litemedsam_model, tmp_path).mask_slices_scored(slices, prompts)
    masker = _masker(litemedsam_model, tmp_path)
    calls = _counting(masker)
    probs, scores = masker.mask_slices_scored(slices, prompts)
    assert calls == []
    np.testing.assert_array_equal(probs, filled[0])
    np.testing.assert_array_equal(scores, filled[1])


def test_corrupt_entry_is_encoded_again(litemedsam_model, tmp_path, caplog):
    slices, prompts = phantoms(2)
    first = _masker(litemedsam_model, tmp_path)
    filled = first.session(slices).mask([0, 1], prompts)[0]
    entry = first.cache.path(slice_key(slices[1]))
    entry.write_bytes(b"not an array")
    masker = _masker(litemedsam_model, tmp_path)
    calls = _counting(masker)
    with caplog.at_level(logging.WARNING):
        again = masker.session(slices).mask([0, 1], prompts)[0]
    assert calls == [1] and "unreadable" in caplog.text and str(entry) in caplog.text
    np.testing.assert_array_equal(again, filled)
    assert np.load(entry).shape == (256, 64, 64)  # rewritten


def test_other_weights_do_not_share_entries(litemedsam_model, tmp_path):
    slices, _ = phantoms(1)
    _masker(litemedsam_model, tmp_path).session(slices)
    other = load_litemedsam(None, "cpu")[0]
    with torch.no_grad():
        other.image_encoder.neck[0].weight.mul_(1.01)
    assert state_dict_key(other) != state_dict_key(litemedsam_model)
    masker = _masker(other, tmp_path)
    calls = _counting(masker)
    masker.session(slices)
    assert calls == [1]
    assert len({p.parent.parent for p in tmp_path.rglob("*.npy")}) == 2


def test_cache_does_not_change_a_rounds_fingerprint(tmp_path):
    plain = RoundConfig().fingerprint_payload()
    cached = RoundConfig.model_validate(
        {"masker": {"litemedsam": {"embedding_cache": str(tmp_path)}}}).fingerprint_payload()
    assert plain == cached
