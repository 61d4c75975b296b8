"""Shared fixtures: phantom stores and a small trained student (built once per session)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from semisam.pipeline.phantoms import make_phantom
from semisam.schemas import (
    AugmentConfig,
    BatchConfig,
    MeanTeacherConfig,
    OptimizerConfig,
    SamConsistencyConfig,
    StudentSpec,
    TrainConfig,
    VolumeMeta,
)
from semisam.store import open_store, write_volume

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
torch.set_num_threads(2)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PHANTOM_SHAPE = (48, 48, 32)
SPACING = (0.8, 0.9, 2.0)
TEST_SPEC = StudentSpec(channels=(8, 16, 32), strides=(2, 2), patch_size=(32, 32, 32), num_res_units=1)


def phantom_affine() -> np.ndarray:
    a = np.diag([*SPACING, 1.0])
    a[:3, 3] = [12.0, -7.0, 3.5]
    return a


def build_phantom_store(path: Path, count: int, labeled: int, seed: int = 0) -> Path:
    """A store of ``count`` phantoms written straight through the store API (no ingest)."""
    root = open_store(path, create=True)
    for i in range(count):
        image, label = make_phantom(PHANTOM_SHAPE, seed=seed * 100 + i)
        meta = VolumeMeta(volume_id=f"ph{i:02d}", source=f"phantom:{seed}:{i}", source_format="npy",
                          sha256=f"{seed}-{i}", shape=image.shape, spacing=SPACING,
                          affine=phantom_affine().tolist(), image_dtype="float32", labeled=i < labeled)
        write_volume(root, meta, image, label if i < labeled else None)
        if i >= labeled:  # hidden truth for quality checks
            root[f"volumes/{meta.volume_id}"].create_array("reference", data=label, overwrite=True)
    return path


def supervised_config(iterations: int, seed: int = 0) -> TrainConfig:
    """`semisam train`'s config with only the supervised term: Mean Teacher and the SAM term
    off, 2 labeled patches a step (half centred on foreground), Adam at a constant 1e-3, no
    augmentation, so that a few steps give a student that localizes the phantoms."""
    return TrainConfig(
        student=TEST_SPEC, iterations=iterations, seed=seed,
        batch=BatchConfig(labeled=2, unlabeled=0, foreground_prob=0.5),
        augment=AugmentConfig(rot90=False, flip=False),
        optimizer=OptimizerConfig(kind="adam", lr=1e-3, schedule="constant"),
        mean_teacher=MeanTeacherConfig(enabled=False), sam=SamConsistencyConfig(enabled=False))


@pytest.fixture(scope="session")
def trained_student(tmp_path_factory) -> Path:
    """A small student trained for a few steps on 3 labeled phantoms (~10 s on 2 cores), by the
    training stage users run (`train_student`) with only its supervised term."""
    from semisam.training import train_student

    base = tmp_path_factory.mktemp("student")
    store = build_phantom_store(base / "train.zarr", count=3, labeled=3, seed=7)
    return train_student(store, base / "student.pt", supervised_config(40)).checkpoint


@pytest.fixture(scope="session")
def phantom_store_template(tmp_path_factory) -> Path:
    """6 phantoms, 2 labeled. Copy it (``phantom_store``) before writing rounds into it."""
    return build_phantom_store(tmp_path_factory.mktemp("tpl") / "store.zarr", count=6, labeled=2)


@pytest.fixture
def phantom_store(phantom_store_template, tmp_path) -> Path:
    dst = tmp_path / "store.zarr"
    shutil.copytree(phantom_store_template, dst)
    return dst


def untrained_student(path: Path, channels: int, classes: dict[int, str] | None) -> Path:
    """A seeded, untrained `TEST_SPEC` student with ``channels`` outputs saved at ``path``,
    recording the class map ``classes`` (value -> name) when given."""
    from semisam.workers.student import build_student, save_student

    torch.manual_seed(0)
    spec = TEST_SPEC.model_copy(update={"out_channels": channels})
    meta = {} if classes is None else {"classes": {str(k): v for k, v in classes.items()}}
    save_student(path, build_student(spec), spec, meta)
    return path
