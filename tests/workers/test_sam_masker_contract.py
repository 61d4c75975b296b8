"""`SamMasker` passes the `Masker` contract; plus its own input checks and batching options."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from semisam.schemas import SamConfig, SamFamily
from semisam.workers.maskers import SlicePrompt
from semisam.workers.maskers.sam import SamMasker

from .masker_contract import MaskerContract, disk_prompt, disk_slice
from .sam_models import small_sam

torch.set_num_threads(2)


class TestSamMasker(MaskerContract):
    @pytest.fixture
    def masker(self) -> SamMasker:
        return SamMasker(SamConfig(), torch.device("cpu"), model=small_sam(seed=0))


def _batch(h: int, w: int, n: int):
    slices = np.stack([disk_slice(h, w, h / 2, w / 2 + i, min(h, w) / 4, seed=i)
                       for i in range(n)])
    prompts = [disk_prompt(i, h / 2, w / 2 + i, min(h, w) / 4) for i in range(n)]
    return slices, prompts


def test_small_encoder_batches_give_same_result():
    slices, prompts = _batch(40, 56, 5)
    sam = small_sam(seed=0)
    full = SamMasker(SamConfig(batch_size=8), "cpu", model=sam).mask_slices(slices, prompts)
    chunked = SamMasker(SamConfig(batch_size=2), "cpu", model=sam).mask_slices(slices, prompts)
    np.testing.assert_allclose(chunked, full, atol=1e-4)


@pytest.mark.parametrize("family", [SamFamily.sam, SamFamily.medsam])
@pytest.mark.parametrize("multimask", [False, True])
def test_families_multimask_and_mask_prompt(family, multimask):
    slices, prompts = _batch(48, 40, 3)
    rng = np.random.default_rng(0)
    prompts[1] = SlicePrompt(index=1, box=prompts[1].box,
                             mask_logits=rng.normal(0, 3, (48, 40)).astype(np.float32))
    config = SamConfig(family=family, multimask_output=multimask)
    out = SamMasker(config, "cpu", model=small_sam(seed=0)).mask_slices(slices, prompts)
    assert out.shape == slices.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and 0.0 <= out.min() and out.max() <= 1.0


def test_mask_prompt_changes_the_result():
    slices, prompts = _batch(48, 48, 1)
    masker = SamMasker(SamConfig(), "cpu", model=small_sam(seed=0))
    plain = masker.mask_slices(slices, prompts)
    yy, xx = np.mgrid[0:48, 0:48]
    logits = np.where((yy - 24) ** 2 + (xx - 24) ** 2 < 100, 10.0, -10.0).astype(np.float32)
    with_mask = masker.mask_slices(slices, [SlicePrompt(
        index=0, box=prompts[0].box, points=prompts[0].points,
        point_labels=prompts[0].point_labels, mask_logits=logits)])
    assert np.abs(with_mask - plain).max() > 1e-3


@pytest.mark.parametrize("bad", [
    {"box": np.zeros(3, np.float32)},
    {"box": np.array([0, 0, np.nan, 4], np.float32)},
    {"points": np.zeros((2, 3), np.float32), "point_labels": np.ones(2, np.int64)},
    {"points": np.zeros((2, 2), np.float32), "point_labels": np.ones(1, np.int64)},
])
def test_malformed_prompt_rejected(bad):
    slices, prompts = _batch(32, 32, 1)
    fields = {"index": 7, "box": prompts[0].box, **bad}
    masker = SamMasker(SamConfig(), "cpu", model=small_sam(seed=0))
    with pytest.raises(ValueError, match="slice 7"):
        masker.mask_slices(slices, [SlicePrompt(**fields)])


@pytest.mark.parametrize("slices", [np.zeros((1, 32, 32), np.float32),
                                    np.zeros((32, 32), np.uint8)])
def test_bad_slices_rejected(slices):
    masker = SamMasker(SamConfig(), "cpu", model=small_sam(seed=0))
    prompt = disk_prompt(0, 16, 16, 5)
    with pytest.raises(ValueError):
        masker.mask_slices(slices, [prompt])


def test_describe_given_model():
    masker = SamMasker(SamConfig(dtype="bfloat16"), "cpu", model=small_sam(seed=0))
    info = masker.describe()
    assert info == {
        "name": "sam", "model_type": "vit_b", "family": "sam", "dtype": "bfloat16",
        "sdpa": True, "fp8": "none", "rel_pos": "mask", "compile": False, "compile_mode": "default",
        "multimask_output": False, "checkpoint": None, "checkpoint_sha256": None,
        "weights": "given",
    }
    assert masker.model.image_encoder.patch_embed.proj.weight.dtype == torch.bfloat16
    assert masker.model.mask_decoder.iou_token.weight.dtype == torch.float32


def test_compile_sets_inductor_cache_dir(tmp_path, monkeypatch):
    """Compilation itself is lazy (first forward); here only the wiring is checked."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "restored-after-the-test")
    monkeypatch.setenv("TRITON_CACHE_DIR", "unset-below")  # so that the teardown restores it
    monkeypatch.delenv("TRITON_CACHE_DIR")
    cache = tmp_path / "inductor"
    config = SamConfig(compile=True, compile_cache_dir=cache)
    masker = SamMasker(config, "cpu", model=small_sam(seed=0))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache.resolve())
    assert os.environ["TRITON_CACHE_DIR"] == str(cache.resolve() / "triton-kernels")
    assert cache.is_dir()
    assert isinstance(masker.encoder.forward, torch._dynamo.eval_frame.OptimizedModule)
