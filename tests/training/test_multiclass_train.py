"""Training on a multi-class store: class values -> indices, a K+1-channel student whose
checkpoint records the class map, and one-line errors for a student that does not fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from semisam.pipeline.cli import app
from semisam.schemas import CheckpointError, ClassMap, ConfigError, InputError, TrainConfig
from semisam.store import (
    list_metas,
    open_store,
    read_class_map,
    read_image,
    read_label,
    read_reference,
    write_class_map,
    write_volume,
)
from semisam.training import train_student
from semisam.training.checkpoint import checkpoint_classes
from semisam.training.dataset import PatchSampler, open_training_data
from semisam.workers.student import check_student_classes, load_student
from tests.conftest import build_phantom_store
from tests.training.test_train import SMALL, fake_round


def split_halves(label: np.ndarray, values: tuple[int, int]) -> np.ndarray:
    """A phantom's foreground cut at its median position along axis 0: ``values[0]`` before the
    cut, ``values[1]`` from it on (``XxYxZ`` uint8)."""
    foreground = label > 0
    cut = int(np.median(np.nonzero(foreground)[0]))
    x = np.arange(label.shape[0])[:, None, None]
    out = np.zeros_like(label, dtype=np.uint8)
    out[foreground & (x < cut)] = values[0]
    out[foreground & (x >= cut)] = values[1]
    return out


def build_multiclass_store(path: Path, values: tuple[int, int] = (1, 2),
                           names: tuple[str, str] = ("a", "b"), count: int = 4,
                           labeled: int = 2, seed: int = 0) -> Path:
    """`build_phantom_store` with every label and reference split into two structures
    (`split_halves`) and the class map ``values -> names`` in the store root."""
    build_phantom_store(path, count, labeled, seed)
    root = open_store(path)
    for meta in list_metas(root):
        vid = meta.volume_id
        if meta.labeled:
            write_volume(root, meta, read_image(root, vid), split_halves(read_label(root, vid), values))
        else:
            root[f"volumes/{vid}"].create_array(
                "reference", data=split_halves(read_reference(root, vid), values), overwrite=True)
    write_class_map(root, ClassMap(names=dict(zip(values, names))))
    return path


def _config(iterations: int = 2, **student) -> TrainConfig:
    cfg = TrainConfig(student=SMALL.model_copy(update=student), iterations=iterations,
                      checkpoint_every=iterations, seed=3)
    cfg.batch.labeled, cfg.batch.unlabeled, cfg.batch.foreground_prob = 1, 1, 1.0
    cfg.mean_teacher.ramp_unit = cfg.sam.ramp_unit = 1
    cfg.sam.loss = "ce_dice"
    return cfg


def test_patches_carry_class_indices_not_values(tmp_path):
    """Values {2, 5} become indices {1, 2}; a value outside the class map is a one-line error."""
    store = build_multiclass_store(tmp_path / "s.zarr", values=(2, 5), count=2, labeled=2)
    root = open_store(store, read_only=True)
    cfg = _config()
    cfg.student.patch_size = (32, 32, 32)
    cfg.augment.rot90 = cfg.augment.flip = False
    data = open_training_data(root, cfg, None)
    assert data.classes == ClassMap(names={2: "a", 5: "b"})
    sampler = PatchSampler(data, cfg, use_unlabeled=False)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(6):
        batch = sampler.sample(rng)
        assert batch.label.dtype == np.int64
        seen |= set(np.unique(batch.label).tolist())
    assert seen == {0, 1, 2}
    # the fingerprint covers the class map of a multi-class store
    renamed = open_store(store)
    write_class_map(renamed, ClassMap(names={2: "b", 5: "a"}))
    assert open_training_data(renamed, cfg, None).fingerprint != data.fingerprint
    bad = read_label(renamed, "ph00")
    bad[bad == 5] = 7
    write_volume(renamed, list_metas(renamed)[0], read_image(renamed, "ph00"), bad)
    sampler = PatchSampler(open_training_data(renamed, cfg, None), cfg, use_unlabeled=False)
    with pytest.raises(InputError, match=r"volume 'ph00': label value 7 is not in the store's class map") as err:
        for _ in range(10):
            sampler.sample(rng)
    assert "\n" not in str(err.value)


def test_two_class_store_trains_a_three_channel_student(tmp_path):
    store = build_multiclass_store(tmp_path / "s.zarr")
    fake_round(store)  # pseudo-labels: the two-class references, as class values
    seen = []
    cfg = _config(iterations=2)
    assert cfg.student.out_channels == 2  # the default: fitted to the store
    train_student(store, tmp_path / "s.pt", cfg, round_index=1, on_step=lambda i, info: seen.append(info))
    assert len(seen) == 2 and all(np.isfinite(info["loss"]) and info["sam"] > 0 for info in seen)
    model, spec, meta = load_student(tmp_path / "s.pt")
    assert spec.out_channels == 3
    assert model(torch.zeros(1, 1, *spec.patch_size)).shape[1] == 3
    classes = read_class_map(open_store(store, read_only=True))
    assert meta["classes"] == {"1": "a", "2": "b"}
    assert meta["ordered_axes"] == [0]  # split at the median along axis 0 (split_halves)
    assert checkpoint_classes(meta, tmp_path / "s.pt") == classes
    check_student_classes(spec, classes, tmp_path / "s.pt")  # what a round checks: passes
    assert TrainConfig.model_validate(meta["config"]).student.out_channels == 3
    # an explicit K + 1 is the same run: resuming it finds nothing left to do
    again = train_student(store, tmp_path / "s.pt", _config(iterations=2, out_channels=3),
                          round_index=1, resume=True)
    assert again.started_at == 2
    # renaming the classes changes what the labels mean: no resume
    write_class_map(open_store(store), ClassMap(names={1: "b", 2: "a"}))
    with pytest.raises(CheckpointError, match="store changed"):
        train_student(store, tmp_path / "s.pt", cfg, round_index=1, resume=True)


def test_explicit_wrong_out_channels_is_a_one_line_error(tmp_path):
    store = build_multiclass_store(tmp_path / "s.zarr", count=2, labeled=1)
    with pytest.raises(ConfigError) as err:
        train_student(store, tmp_path / "s.pt", _config(out_channels=4))
    message = str(err.value)
    assert "\n" not in message
    assert "student.out_channels 4" in message and str(store) in message and "K=2" in message
    assert not (tmp_path / "s.pt").exists()
    config = tmp_path / "train.json"  # the same through `semisam train --config`
    config.write_text(json.dumps(_config(out_channels=5).model_dump(mode="json")))
    proc = CliRunner().invoke(app, ["train", str(store), "--out", str(tmp_path / "c.pt"),
                                    "--config", str(config), "--no-progress"])
    assert proc.exit_code == 2
    assert "student.out_channels 5" in proc.output and "K=2" in proc.output
    assert len(proc.output.strip().splitlines()) == 1


def test_binary_store_refuses_a_three_channel_student(phantom_store, tmp_path):
    """K = 1 needs 2 channels, as a round would refuse any other student."""
    with pytest.raises(ConfigError, match=r"student.out_channels 3: .* K=1 .*needs K\+1=2"):
        train_student(phantom_store, tmp_path / "s.pt", _config(out_channels=3))


def test_augmentation_warning_for_several_structures() -> None:
    """Random rot90/flips on a store of several structures with class-aware augmentation off
    are warned about (they swap structures that differ by position); class-aware (the
    default), one structure, or augmentation off, are not."""
    from semisam.schemas import binary_classes
    from semisam.training.mean_teacher import augmentation_warning

    two = ClassMap(names={1: "anterior", 2: "posterior"})
    cfg = TrainConfig()
    assert cfg.augment.rot90 and cfg.augment.flip and cfg.augment.class_aware  # the defaults
    assert augmentation_warning(cfg, two) is None
    cfg.augment.class_aware = False
    message = augmentation_warning(cfg, two)
    assert message is not None and "augment.rot90/flip" in message and "2 structures" in message
    assert augmentation_warning(cfg, binary_classes()) is None
    only_flip = cfg.model_copy(deep=True)
    only_flip.augment.rot90 = False
    flip_message = augmentation_warning(only_flip, two)
    assert flip_message is not None and "augment.flip " in flip_message and "rot90 on" not in flip_message
    off = only_flip.model_copy(deep=True)
    off.augment.flip = False
    assert augmentation_warning(off, two) is None
