"""LiteMedSAM masker: the contract, parity with the official per-slice inference on the same
(bundled, trained) weights, and its checkpoint checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from semisam.schemas import (
    LITEMEDSAM_SHA256,
    CheckpointError,
    IntensityConfig,
    LiteMedSamConfig,
    MaskerConfig,
    PromptConfig,
    RoundConfig,
    bundled_litemedsam_checkpoint,
)
from semisam.workers.intensity import window_volume
from semisam.workers.localization import slice_prompts, stack_slices
from semisam.workers.maskers import SlicePrompt, build_masker
from semisam.workers.maskers.litemedsam import LiteMedSamMasker, load_litemedsam
from semisam.workers.maskers.litemedsam.preprocess import box_to_input, resized_shape

from .litemedsam_reference import reference_slice
from .masker_contract import MaskerContract, disk_prompt, disk_slice

torch.set_num_threads(2)
LA = Path(__file__).resolve().parents[3] / "shared" / "data" / "la"


@pytest.fixture(scope="module")
def lite() -> LiteMedSamMasker:
    return LiteMedSamMasker(LiteMedSamConfig(batch_size=4), "cpu")


class TestLiteMedSamMasker(MaskerContract):
    @pytest.fixture
    def masker(self, lite) -> LiteMedSamMasker:
        return lite


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _check_parity(masker: LiteMedSamMasker, slices: np.ndarray, prompts: list[SlicePrompt]):
    ours, scores = masker.mask_slices_scored(slices, prompts)
    for i, prompt in enumerate(prompts):
        ref, ref_iou = reference_slice(masker.model, slices[i], prompt.box)
        assert _iou(ours[i], ref) >= 0.99, f"slice {i}: IoU {_iou(ours[i], ref):.4f}"
        assert np.abs(ours[i] - ref).max() < 1e-3
        assert abs(float(scores[i]) - ref_iou) < 1e-3


@pytest.mark.parametrize("hw", [(64, 64), (40, 72), (183, 140)])
def test_parity_with_official_inference_on_phantoms(lite, hw):
    h, w = hw
    slices = np.stack([disk_slice(h, w, h / 2 + 3 * i, w / 2, min(h, w) / 4, seed=i)
                       for i in range(3)])
    prompts = [SlicePrompt(i, disk_prompt(i, h / 2 + 3 * i, w / 2, min(h, w) / 4).box)
               for i in range(3)]  # box only, as the official script prompts
    _check_parity(lite, slices, prompts)
    # the trained model segments the disk the box holds (random weights would not)
    yy, xx = np.mgrid[0:h, 0:w]
    disk = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (min(h, w) / 4) ** 2
    assert _iou(lite.mask_slices(slices[:1], prompts[:1])[0], disk.astype(np.float32)) > 0.8


@pytest.mark.realdata
@pytest.mark.skipif(not (LA / "volumes.list").is_file(), reason="../shared/data/la absent")
def test_parity_with_official_inference_on_left_atrium(lite):
    import h5py

    first = (LA / "volumes.list").read_text().split()[0]
    with h5py.File(LA / f"{first}.h5") as f:
        image, label = f["image"][...], f["label"][...].astype(bool)
    prompts = slice_prompts(label, label.astype(np.float32), PromptConfig(positive_points=0))
    prompts = prompts[:: max(1, len(prompts) // 6)][:6]  # spread over the atrium
    slices = stack_slices(window_volume(image, IntensityConfig()), [p.index for p in prompts], 2)
    _check_parity(lite, slices, prompts)


def test_box_scaling_truncates_like_the_official_script():
    boxes = np.array([[10.7, 3.2, 100.9, 50.5]], np.float32)
    np.testing.assert_array_equal(box_to_input(boxes, (183, 140)),
                                  np.trunc(boxes * (256 / 183)))
    assert resized_shape(183, 140) == (256, 196)


def test_default_round_uses_bundled_weights():
    cfg = RoundConfig()
    assert cfg.masker.kind == "litemedsam" and cfg.masker.litemedsam.checkpoint is None
    assert cfg.masker.litemedsam.resolved_checkpoint() == bundled_litemedsam_checkpoint()
    masker = build_masker(MaskerConfig(), "cpu")
    info = masker.describe()
    assert info["weights"] == "bundled" and info["checkpoint_sha256"] == LITEMEDSAM_SHA256


def test_user_checkpoint_loads_and_is_recorded(tmp_path):
    model, _, _ = load_litemedsam(None, "cpu")
    path = tmp_path / "finetuned.pth"
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["mask_decoder.iou_token.weight"] += 1.0
    torch.save({"model": state}, path)
    masker = LiteMedSamMasker(LiteMedSamConfig(checkpoint=path), "cpu")
    info = masker.describe()
    assert info["weights"] == "checkpoint" and info["checkpoint"] == str(path)
    assert info["checkpoint_sha256"] != LITEMEDSAM_SHA256
    assert torch.equal(masker.model.state_dict()["mask_decoder.iou_token.weight"],
                       state["mask_decoder.iou_token.weight"])


def _one_line(exc: pytest.ExceptionInfo, path: Path) -> str:
    text = str(exc.value)
    assert "\n" not in text and str(path) in text, text
    return text


def test_sam_vit_checkpoint_is_refused_naming_the_fix(tmp_path):
    path = tmp_path / "sam_vit_b.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1, 64, 64, 768)}, path)
    with pytest.raises(CheckpointError) as exc:
        load_litemedsam(path, "cpu")
    assert "--masker sam" in _one_line(exc, path)


def test_wrong_shape_missing_key_corrupt_and_unsafe_files(tmp_path):
    model, _, _ = load_litemedsam(None, "cpu")
    state = dict(model.state_dict())
    bad = tmp_path / "shape.pth"
    torch.save({**state, "mask_decoder.iou_token.weight": torch.zeros(2, 256)}, bad)
    with pytest.raises(CheckpointError) as exc:
        load_litemedsam(bad, "cpu")
    assert "iou_token" in _one_line(exc, bad)
    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("mask_decoder.")}, missing)
    with pytest.raises(CheckpointError) as exc:
        load_litemedsam(missing, "cpu")
    assert "missing" in _one_line(exc, missing)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(bundled_litemedsam_checkpoint().read_bytes()[:4096])
    with pytest.raises(CheckpointError) as exc:
        load_litemedsam(cut, "cpu")
    assert "corrupt" in _one_line(exc, cut)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": state, "extra": Path("x")}, unsafe)
    with pytest.raises(CheckpointError) as exc:
        load_litemedsam(unsafe, "cpu")
    assert "refused" in _one_line(exc, unsafe)
