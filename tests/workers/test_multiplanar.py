"""Multi-planar rounds (`prompts.extra_axes`): the masker runs along several slice axes and its
probabilities are averaged where the axes overlap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semisam.pipeline.rounds.state import plan_round
from semisam.schemas import FusionConfig, PromptConfig, RoundConfig, VolumeStatus
from semisam.store import list_metas, open_store, read_output
from semisam.workers.fusion import MaskerView, fuse, masker_volume
from semisam.workers.volume import VolumeProcessor


def test_masker_volume_averages_overlapping_views():
    views = [MaskerView(2, [1], np.ones((1, 3, 4), np.float32)),
             MaskerView(0, [0, 2], np.stack([np.zeros((4, 5)), np.full((4, 5), 0.5)]).astype(np.float32))]
    m, covered = masker_volume((3, 4, 5), views)
    assert m[0, 0, 1] == pytest.approx(0.5)  # both views: (1 + 0) / 2
    assert m[2, 3, 1] == pytest.approx(0.75)  # both views: (1 + 0.5) / 2
    assert m[1, 2, 1] == 1.0 and m[0, 2, 3] == 0.0 and m[2, 0, 0] == 0.5  # one view each
    assert not covered[1, 0, 0] and m[1, 0, 0] == 0.0  # no view
    assert covered.sum() == 3 * 4 + 2 * 4 * 5 - 2 * 4


def test_fuse_with_an_extra_view():
    student = np.full((3, 4, 5), 0.2, np.float32)
    main = np.ones((1, 3, 4), np.float32)  # axis 2, slice 1
    extra = MaskerView(0, [0], np.zeros((1, 4, 5), np.float32))  # axis 0, slice 0
    result = fuse(student, main, [1], FusionConfig(), 2, extra_views=[extra])
    conf = result.confidence / 255.0
    assert result.pseudo_label[0, 0, 1] == 0 and conf[0, 0, 1] == 0.0  # mean 0.5: undecided
    assert result.pseudo_label[1, 0, 1] == 1  # axis 2 alone: masker 1
    assert conf[1, 0, 1] == pytest.approx(0.2, abs=1 / 255)  # margin 1 x agreement 1 - 0.8
    assert result.pseudo_label[0, 0, 3] == 0 and conf[0, 0, 3] == pytest.approx(0.8, abs=1 / 255)
    assert conf[2, 0, 3] == pytest.approx(0.6, abs=1 / 255)  # no view: the student's margin
    assert result.stats.slices_total == 5 + 3 and result.stats.slices_prompted == 2


@pytest.mark.parametrize("axes", [(2,), (0, 0), (4,)])
def test_extra_axes_validated(axes):
    with pytest.raises(ValueError, match="extra_axes"):
        PromptConfig(slice_axis=2, extra_axes=axes)


def _round_volume(store, round_index, config, student):
    """One unlabeled volume of ``store`` through a planned round: its id, record and label."""
    root = open_store(store)
    plan_round(root, round_index, config, student)
    threads = torch.get_num_threads()
    try:
        processor = VolumeProcessor(str(store), round_index, config, student)
        vid = next(m.volume_id for m in list_metas(root) if not m.labeled)
        record = processor.process(vid)
    finally:
        torch.set_num_threads(threads)
    return vid, record, read_output(open_store(store, read_only=True), round_index, "pseudo_label", vid)


def _dice(store, vid, label) -> float:
    truth = np.asarray(open_store(store, read_only=True)[f"volumes/{vid}/reference"][...]) > 0
    return 2 * ((label > 0) & truth).sum() / ((label > 0).sum() + truth.sum())


def test_multiplanar_round_on_a_phantom(phantom_store, trained_student):
    def run(extra_axes):
        config = RoundConfig(masker={"kind": "random_walker"})
        config.prompts.extra_axes = extra_axes
        return _round_volume(phantom_store, 1 if not extra_axes else 2, config, trained_student)

    vid, single, label1 = run(())
    _, multi, label3 = run((0, 1))
    assert single.status == multi.status == VolumeStatus.done
    shape = label1.shape
    assert single.stats.slices_total == shape[2] and multi.stats.slices_total == sum(shape)
    assert multi.stats.slices_prompted > single.stats.slices_prompted
    assert _dice(phantom_store, vid, label3) > 0.6


def test_multiplanar_litemedsam_round_with_propagation_and_flips(phantom_store, trained_student,
                                                               litemedsam_model):
    """LiteMedSAM's default recipe (box propagation from the agreement slices, average fusion)
    along all three axes, the prompting student averaged over flips: every axis is prompted
    and the label still finds the phantom."""
    config = RoundConfig()
    config.prompts.extra_axes = (0, 1)
    config.student.flip_axes = (0, 1)
    assert config.masker.kind == "litemedsam" and config.prompts.propagate
    vid, record, label = _round_volume(phantom_store, 1, config, trained_student)
    assert record.status == VolumeStatus.done, record.error
    assert record.stats.slices_total == sum(label.shape)
    single_axis_slices = int((np.asarray(label) > 0).any(axis=(0, 1)).sum())
    assert record.stats.slices_prompted > single_axis_slices
    assert _dice(phantom_store, vid, label) > 0.6
