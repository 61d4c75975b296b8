"""Dense mask prompts in adaptation (`AdaptConfig.mask_prompt`): perturbed references that look
like a student's rough mask, on a share of the training examples and the held-out checks."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from semisam.schemas import AdaptConfig, AdaptMaskPromptConfig, LiteMedSamConfig, RoundConfig
from semisam.training.adaptation.data import load_adaptation_data
from semisam.training.adaptation.mask_prompts import perturbed_mask, perturbed_mask_logits
from semisam.workers.maskers.litemedsam import LiteMedSamMasker
from tests.conftest import build_phantom_store


def _disk(shape: tuple[int, int] = (64, 80), centre=(30, 40), radius: float = 14) -> np.ndarray:
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_without_perturbation_the_prompt_is_the_reference():
    mask = _disk()
    still = AdaptMaskPromptConfig(grow=0, shift=0, blob_prob=0, blur_sigma=0)
    prob = perturbed_mask(mask, still, np.random.default_rng(0))
    assert prob.shape == mask.shape and prob.dtype == np.float32
    assert np.array_equal(prob > 0.5, mask)
    logits = perturbed_mask_logits(mask, still, np.random.default_rng(0))
    assert np.array_equal(logits > 0, mask) and 9.0 < logits.max() < 9.3


def test_perturbed_prompts_are_rough_copies_of_the_reference():
    """Each draw differs from the reference (none is exact), but stays a copy of it: Dice over
    many draws as the schema's docstring says (0.7-0.95 on average, never disjoint)."""
    mask = _disk()
    rng = np.random.default_rng(1)
    draws = [perturbed_mask(mask, AdaptMaskPromptConfig(), rng) for _ in range(60)]
    scores = [_dice(p > 0.5, mask) for p in draws]
    assert all(0.0 <= p.min() and p.max() <= 1.0 for p in draws)
    assert 0.7 < float(np.mean(scores)) < 0.95
    assert min(scores) > 0.3 and sum(s > 0.999 for s in scores) < 6
    # grown, shrunk and moved: some draws larger, some smaller, some off-centre
    areas = [int((p > 0.5).sum()) for p in draws]
    assert min(areas) < mask.sum() < max(areas)


def test_an_empty_reference_gives_an_empty_prompt():
    empty = np.zeros((32, 32), bool)
    prob = perturbed_mask(empty, AdaptMaskPromptConfig(), np.random.default_rng(0))
    assert not (prob > 0.5).any()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_phantom_store(tmp_path_factory.mktemp("maskprompt") / "s.zarr", count=2,
                               labeled=1, seed=5)


def test_a_share_of_examples_and_checks_carry_a_mask_prompt(store, tmp_path):
    masker = LiteMedSamMasker(LiteMedSamConfig(embedding_cache=tmp_path / "emb"), "cpu")
    # one labeled volume holds out nothing unless told; the checks need held-out slices
    plain = load_adaptation_data(store, masker, AdaptConfig(holdout_fraction=0.2), RoundConfig())
    half = AdaptConfig(batch_size=64, mask_prompt={"share": 0.5}, holdout_fraction=0.2)
    data = load_adaptation_data(store, masker, half, RoundConfig())
    assert all(mask is None for _, _, mask in plain.checks)
    with_mask = [mask for _, _, mask in data.checks if mask is not None]
    assert 0 < len(with_mask) < len(data.checks)
    # checks are drawn once, seeded: a second load gives the very same prompts
    again = load_adaptation_data(store, masker, half, RoundConfig())
    assert all((a is None and b is None) or np.array_equal(a, b)
               for (_, _, a), (_, _, b) in zip(data.checks, again.checks))
    _, prompts, hws, _, _ = data.sample(half, np.random.default_rng(0))
    shapes = [p.mask_logits.shape for p in prompts if p.mask_logits is not None]
    assert 0 < len(shapes) < len(prompts) and all(s == hw for s, hw in zip(shapes, hws))
    _, prompts, _, _, _ = plain.sample(AdaptConfig(batch_size=64), np.random.default_rng(0))
    assert all(p.mask_logits is None for p in prompts)
    # the masker decodes a batch that mixes prompts with and without a mask
    assert data.validate(masker) > 0.0


@pytest.mark.parametrize("bad", [{"share": 1.5}, {"grow": -0.1}, {"blur_sigma": -1}])
def test_a_bad_mask_prompt_setting_is_refused_naming_the_field(bad):
    with pytest.raises(ValidationError) as err:
        AdaptConfig(mask_prompt=bad)
    assert next(iter(bad)) in str(err.value)
