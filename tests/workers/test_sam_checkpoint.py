"""Loading SAM checkpoints: the official format round-trips; everything else fails on one line."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle

import pytest
import torch
from segment_anything import sam_model_registry

from semisam.schemas import CheckpointError, MaskerConfig, MaskerKind, SamConfig, SamType
from semisam.store import sha256_file
from semisam.workers.maskers import build_masker
from semisam.workers.maskers.sam import (
    SamMasker,
    expected_shapes,
    load_sam,
    read_state_dict,
)

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def vit_b_file(tmp_path_factory):
    """A random vit_b saved as the official checkpoints are: ``torch.save(state_dict)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        model = sam_model_registry["vit_b"](checkpoint=None)
    path = tmp_path_factory.mktemp("ckpt") / "sam_vit_b_random.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def _one_line(exc: pytest.ExceptionInfo, path) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    assert str(path) in text, text
    return text


def test_round_trip_vit_b(vit_b_file):
    path, state = vit_b_file
    model = load_sam(SamType.vit_b, path, "cpu")
    assert not model.training
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, tensor in state.items():
        assert torch.equal(loaded[key], tensor), key


def test_wrong_type_names_key_and_shapes(vit_b_file):
    path, _ = vit_b_file
    with pytest.raises(CheckpointError) as exc:
        load_sam(SamType.vit_l, path, "cpu")
    text = _one_line(exc, path)
    assert ("does not fit SAM vit_l: 'image_encoder.pos_embed' is [1,64,64,768], "
            "vit_l expects [1,64,64,1024]") in text


def test_expected_shapes_are_the_registry_architectures():
    """Built on the meta device: cheap even for vit_h, and the real shapes."""
    for model_type, dim, depth in ((SamType.vit_b, 768, 12), (SamType.vit_l, 1024, 24),
                                   (SamType.vit_h, 1280, 32)):
        shapes = expected_shapes(model_type)
        assert shapes["image_encoder.pos_embed"] == (1, 64, 64, dim)
        assert f"image_encoder.blocks.{depth - 1}.attn.qkv.weight" in shapes
        assert f"image_encoder.blocks.{depth}.attn.qkv.weight" not in shapes


def test_missing_and_unexpected_keys(tmp_path, vit_b_file):
    _, state = vit_b_file
    short = dict(state)
    short.pop("mask_decoder.iou_token.weight")
    path = tmp_path / "short.pth"
    torch.save(short, path)
    with pytest.raises(CheckpointError) as exc:
        load_sam("vit_b", path, "cpu")
    assert "missing key 'mask_decoder.iou_token.weight'" in _one_line(exc, path)
    extra = dict(state)
    extra["head.weight"] = torch.zeros(1)
    torch.save(extra, path)
    with pytest.raises(CheckpointError) as exc:
        load_sam("vit_b", path, "cpu")
    assert "unexpected key 'head.weight'" in _one_line(exc, path)


def test_truncated_file(tmp_path, vit_b_file):
    path, _ = vit_b_file
    cut = tmp_path / "truncated.pth"
    with open(path, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(os.path.getsize(path) // 2))
    with pytest.raises(CheckpointError) as exc:
        load_sam("vit_b", cut, "cpu")
    assert "corrupt or truncated" in _one_line(exc, cut)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 20, b"PK\x03\x04junk"])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as exc:
        read_state_dict(path)
    assert "corrupt" in _one_line(exc, path)


class _RunsCode:
    """Unpickling this calls os.system: a checkpoint must never get that far."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_code_executing_pickle_is_refused(tmp_path, writer):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    payload = {"image_encoder.pos_embed": _RunsCode(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(CheckpointError) as exc:
        load_sam("vit_b", path, "cpu")
    text = _one_line(exc, path)
    assert "refused: holds objects other than tensors (loaded with weights_only=True)" in text
    assert not marker.exists()


@pytest.mark.parametrize("payload", [torch.zeros(3), [torch.zeros(3)], {"a": [1, 2]}, {},
                                     {"model": {"w": "text"}}])
def test_not_a_state_dict(tmp_path, payload):
    path = tmp_path / "odd.pth"
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as exc:
        read_state_dict(path)
    assert "not a state dict" in _one_line(exc, path)


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_wrapped_state_dict_is_unwrapped(tmp_path, wrapper):
    path = tmp_path / "wrapped.pth"
    inner = {"a.weight": torch.ones(2), "b.bias": torch.zeros(1)}
    torch.save({wrapper: inner, "epoch": 3}, path)
    out = read_state_dict(path)
    assert out.keys() == inner.keys() and torch.equal(out["a.weight"], inner["a.weight"])


def test_missing_file_and_directory(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError) as exc:
        load_sam("vit_b", path, "cpu")
    assert "not found" in _one_line(exc, path)
    with pytest.raises(CheckpointError) as exc:
        load_sam("vit_b", tmp_path, "cpu")
    assert "not a file" in _one_line(exc, tmp_path)


def test_random_weights_are_seeded_and_warned(caplog):
    state = torch.random.get_rng_state()
    with caplog.at_level(logging.WARNING):
        a = load_sam("vit_b", None, "cpu")
    assert "RANDOM weights" in caplog.text
    assert torch.equal(torch.random.get_rng_state(), state), "global RNG must be untouched"
    b = load_sam("vit_b", None, "cpu")
    key = "image_encoder.blocks.0.attn.qkv.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])


def test_sha256_file(tmp_path):
    path = tmp_path / "blob.bin"
    data = os.urandom(3 * 1024 + 17)
    path.write_bytes(data)
    assert sha256_file(path, chunk_bytes=1024) == hashlib.sha256(data).hexdigest()


def test_masker_from_registry_describes_checkpoint(vit_b_file):
    path, _ = vit_b_file
    config = MaskerConfig(kind=MaskerKind.sam, sam=SamConfig(checkpoint=path))
    masker = build_masker(config, "cpu")
    assert isinstance(masker, SamMasker)
    info = masker.describe()
    assert info["name"] == "sam" and info["model_type"] == "vit_b"
    assert info["family"] == "sam" and info["dtype"] == "float32"
    assert info["checkpoint_sha256"] == sha256_file(path)
    assert info["weights"] == "checkpoint"
