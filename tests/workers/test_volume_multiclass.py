"""A multi-class volume through `VolumeProcessor`: one prompt set per class, each axis's slices
encoded once, one label map in the store's class values, per-class statistics; and students
whose channels do not fit the store are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from semisam.pipeline.phantoms import make_multiclass_phantom
from semisam.pipeline.rounds.state import check_checkpoints
from semisam.schemas import ClassMap, InputError, RandomWalkerConfig, RoundConfig, VolumeMeta
from semisam.store import open_store, read_class_map, read_output, write_class_map, write_volume
from semisam.workers.maskers.random_walker import RandomWalkerMasker
from semisam.workers.student import build_student, save_student
from semisam.workers.volume import VolumeProcessor
from tests.conftest import PHANTOM_SHAPE, SPACING, TEST_SPEC, phantom_affine

CLASSES = ClassMap(names={1: "left", 2: "middle", 5: "right"})


def _store(path: Path) -> Path:
    root = open_store(path, create=True)
    for i in range(2):
        image, label = make_multiclass_phantom(PHANTOM_SHAPE, seed=i)
        label = np.asarray([0, 1, 2, 5], np.uint8)[label]  # non-contiguous class values
        meta = VolumeMeta(volume_id=f"mc{i}", source=f"phantom:{i}", source_format="npy",
                          sha256=str(i), shape=image.shape, spacing=SPACING,
                          affine=phantom_affine().tolist(), image_dtype="float32", labeled=i == 0)
        write_volume(root, meta, image, label if i == 0 else None)
    write_class_map(root, CLASSES)
    return path


class CountingWalker(RandomWalkerMasker):
    """The real random walker, counting the sessions (stacks bound) and slices masked."""

    def __init__(self):
        super().__init__(RandomWalkerConfig())
        self.sessions: list[int] = []
        self.masked = 0

    def session(self, slices):
        self.sessions.append(len(slices))
        return super().session(slices)

    def mask_slices_scored(self, slices, prompts):
        self.masked += len(slices)
        return super().mask_slices_scored(slices, prompts)


def _student(path: Path, channels: int) -> Path:
    torch.manual_seed(0)
    spec = TEST_SPEC.model_copy(update={"out_channels": channels})
    save_student(path, build_student(spec), spec)
    return path


def test_one_label_map_in_class_values_with_per_class_stats(tmp_path: Path) -> None:
    store = _store(tmp_path / "s.zarr")
    student = _student(tmp_path / "st.pt", 4)
    cfg = RoundConfig(masker={"kind": "random_walker"})
    cfg.prompts.propagate = True  # the path that prompts slice by slice through a session
    masker = CountingWalker()
    proc = VolumeProcessor(str(store), 1, cfg, student, masker=masker)
    record = proc.process("mc1")
    assert record.status.value == "done", record.error
    root = open_store(store, read_only=True)
    label = read_output(root, 1, "pseudo_label", "mc1")
    assert set(np.unique(label).tolist()) <= {0, 1, 2, 5}
    stats = record.stats
    assert stats is not None and stats.classes is not None
    assert sorted(stats.classes) == [1, 2, 5]
    assert [stats.classes[v].name for v in (1, 2, 5)] == ["left", "middle", "right"]
    for v, cs in stats.classes.items():
        assert cs.foreground_voxels == int((label == v).sum())
    assert stats.slices_prompted == sum(cs.slices_prompted for cs in stats.classes.values())
    assert stats.foreground_voxels == int(np.count_nonzero(label))
    # one stack per axis for all classes, never more slices bound than the volume has
    assert len(masker.sessions) == 1 and masker.sessions[0] <= PHANTOM_SHAPE[2]
    assert read_class_map(root).names == CLASSES.names


def test_a_student_without_a_channel_per_class_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path / "s.zarr")
    student = _student(tmp_path / "st2.pt", 2)
    with pytest.raises(InputError, match=r"2 output channels, but the store has 3 class\(es\) "
                                         r"\(1=left, 2=middle, 5=right\): it needs 4"):
        check_checkpoints(RoundConfig(masker={"kind": "random_walker"}), student,
                          read_class_map(open_store(store)))
    with pytest.raises(InputError, match="it needs 4"):
        VolumeProcessor(str(store), 1, RoundConfig(masker={"kind": "random_walker"}), student,
                        masker=RandomWalkerMasker(RandomWalkerConfig()))


def test_one_structure_stored_under_another_value_keeps_that_value(tmp_path: Path) -> None:
    """A store with one structure whose label value is 4 (not 1): the pseudo-label holds {0, 4}
    (the store's values, which training and export read), never the binary path's {0, 1}."""
    root = open_store(tmp_path / "s.zarr", create=True)
    for i in range(2):
        image, label = make_multiclass_phantom(PHANTOM_SHAPE, seed=i)
        label = np.where(label > 0, 4, 0).astype(np.uint8)
        meta = VolumeMeta(volume_id=f"v{i}", source=f"phantom:{i}", source_format="npy",
                          sha256=str(i), shape=image.shape, spacing=SPACING,
                          affine=phantom_affine().tolist(), image_dtype="float32", labeled=i == 0)
        write_volume(root, meta, image, label if i == 0 else None)
    write_class_map(root, ClassMap(names={4: "liver"}))
    student = _student(tmp_path / "st.pt", 2)
    record = VolumeProcessor(str(tmp_path / "s.zarr"), 1, RoundConfig(masker={"kind": "random_walker"}),
                             student, masker=RandomWalkerMasker(RandomWalkerConfig())).process("v1")
    assert record.status.value == "done", record.error
    label = read_output(open_store(tmp_path / "s.zarr", read_only=True), 1, "pseudo_label", "v1")
    values = set(np.unique(label).tolist())
    assert 4 in values and values <= {0, 4}
