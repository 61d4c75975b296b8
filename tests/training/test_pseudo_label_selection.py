"""Selecting a round's best pseudo-labels (`RoundVolumeSelection`, `PseudoLabelRank`): the ranking
follows the records' student-masker agreement or the stored confidence, the training stage's
SAM term sees only the kept volumes, and the adaptation's pseudo-label examples rank alike."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from semisam.schemas import (
    AdaptConfig,
    PseudoLabelRank,
    PseudoLabelSelection,
    RoundConfig,
    RoundMeta,
    RoundVolumeSelection,
    TrainConfig,
    VolumeRecord,
    VolumeStats,
    VolumeStatus,
)
from semisam.store import (
    list_metas,
    open_store,
    read_reference,
    write_outputs,
    write_record,
    write_round_meta,
)
from semisam.training import load_state, state_path, train_student
from semisam.training.adaptation.data import _pseudo_volumes
from semisam.training.dataset import open_training_data
from semisam.training.selection import UNRANKED, rank_round_volumes, select_round_volumes
from tests.training.test_train import _config

# unlabeled phantoms ph02..ph05: (student-masker Dice, confidence on the foreground / 255)
ROUND = {"ph02": (0.60, 250), "ph03": (0.95, 100), "ph04": (0.80, 200), "ph05": (None, 180)}


def write_ranked_round(store, empty: str | None = None, pending: str | None = None) -> None:
    """Round 1 with the reference as pseudo-label, ``ROUND``'s agreement in each record and its
    confidence on the foreground (0 elsewhere); ``empty``: that volume's pseudo-label is empty;
    ``pending``: that volume's record is failed (not done)."""
    root = open_store(store)
    write_round_meta(root, RoundMeta(round=1, config=RoundConfig().model_dump(mode="json"),
                                     fingerprint="f" * 64, student_checkpoint="x.pt",
                                     student_sha256="0" * 64))
    for meta in list_metas(root):
        if meta.labeled:
            continue
        agreement, conf = ROUND[meta.volume_id]
        label = read_reference(root, meta.volume_id)
        if meta.volume_id == empty:
            label = np.zeros_like(label)
        confidence = np.where(label > 0, conf, 0).astype(np.uint8)
        sums = write_outputs(root, 1, meta.volume_id, label, confidence, 2)
        status = VolumeStatus.failed if meta.volume_id == pending else VolumeStatus.done
        write_record(root, 1, VolumeRecord(volume_id=meta.volume_id, status=status, checksums=sums,
                                           stats=VolumeStats(student_masker_dice=agreement)))


def _unlabeled(store) -> list[str]:
    return [m.volume_id for m in list_metas(open_store(store, read_only=True)) if not m.labeled]


def test_ranking_by_agreement_and_by_confidence(phantom_store):
    write_ranked_round(phantom_store)
    root = open_store(phantom_store, read_only=True)
    ids = _unlabeled(phantom_store)
    by_agreement = rank_round_volumes(root, 1, ids, PseudoLabelRank.agreement)
    assert [vid for _, vid in by_agreement] == ["ph03", "ph04", "ph02", "ph05"]
    assert by_agreement[-1][0] == UNRANKED  # no agreement figure: last
    by_confidence = rank_round_volumes(root, 1, ids, PseudoLabelRank.confidence)
    assert [vid for _, vid in by_confidence] == ["ph02", "ph04", "ph05", "ph03"]
    assert by_confidence[0][0] == pytest.approx(250 / 255)


def test_empty_pseudo_labels_rank_last_and_pending_volumes_not_at_all(phantom_store):
    write_ranked_round(phantom_store, empty="ph03", pending="ph04")
    root = open_store(phantom_store, read_only=True)
    ranked = rank_round_volumes(root, 1, _unlabeled(phantom_store), PseudoLabelRank.agreement)
    assert [vid for _, vid in ranked] == ["ph02", "ph03", "ph05"]
    assert ranked[1][0] == ranked[2][0] == UNRANKED


@pytest.mark.parametrize("fraction, kept", [(1.0, 4), (0.5, 2), (0.6, 2), (0.7, 3), (0.01, 1)])
def test_selection_keeps_the_best_share_and_at_least_one(phantom_store, fraction, kept):
    write_ranked_round(phantom_store)
    root = open_store(phantom_store, read_only=True)
    keep, left = select_round_volumes(root, 1, _unlabeled(phantom_store),
                                      RoundVolumeSelection(top_fraction=fraction))
    assert keep == ["ph03", "ph04", "ph02", "ph05"][:kept]
    assert left == ["ph03", "ph04", "ph02", "ph05"][kept:]


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.2])
def test_top_fraction_outside_0_1_is_refused(bad):
    with pytest.raises(ValidationError, match="top_fraction"):
        TrainConfig.model_validate({"sam": {"volumes": {"top_fraction": bad}}})


def test_training_data_detaches_the_left_out_pseudo_labels(phantom_store):
    write_ranked_round(phantom_store)
    root = open_store(phantom_store, read_only=True)
    every = open_training_data(root, TrainConfig(), 1)
    assert all(s.target is not None for s in every.unlabeled) and len(every.unlabeled) == 4
    cfg = TrainConfig.model_validate({"sam": {"volumes": {"top_fraction": 0.5}}})
    some = open_training_data(root, cfg, 1)
    with_target = sorted(s.meta.volume_id for s in some.unlabeled if s.target is not None)
    assert with_target == ["ph03", "ph04"]
    assert len(some.unlabeled) == 4  # the others stay for the Mean Teacher term
    assert all(s.confidence is None for s in some.unlabeled if s.target is None)
    cfg.sam.volumes.rank_by = PseudoLabelRank.confidence
    by_conf = open_training_data(root, cfg, 1)
    assert sorted(s.meta.volume_id for s in by_conf.unlabeled if s.target is not None) == \
        ["ph02", "ph04"]


def test_a_selecting_run_trains_and_records_its_selection(phantom_store, tmp_path):
    write_ranked_round(phantom_store)
    cfg = _config(iterations=2)
    cfg.sam.volumes = RoundVolumeSelection(top_fraction=0.25)
    seen = []
    train_student(phantom_store, tmp_path / "s.pt", cfg, round_index=1,
                  on_step=lambda i, info: seen.append(info))
    assert len(seen) == 2 and all("sam" in info for info in seen)
    saved = load_state(state_path(tmp_path / "s.pt"))["config"]
    assert saved["sam"]["volumes"] == {"top_fraction": 0.25, "rank_by": "agreement"}


def test_adaptation_pseudo_label_examples_rank_alike(phantom_store):
    write_ranked_round(phantom_store, empty="ph04")
    root = open_store(phantom_store, read_only=True)
    metas = list_metas(root)
    half = {"round": 1, "top_fraction": 0.5}
    by_conf = AdaptConfig(pseudo_labels=PseudoLabelSelection(**half))
    # the empty ph04 never counts; of ph02 (250), ph05 (180), ph03 (100): the best 2 (1.5 rounded)
    assert _pseudo_volumes(root, by_conf, metas) == ["ph02", "ph05"]
    by_agreement = AdaptConfig(pseudo_labels=PseudoLabelSelection(**half, rank_by="agreement"))
    # ph05 has no agreement figure and ph04 is empty: of ph03 and ph02 the best one
    assert _pseudo_volumes(root, by_agreement, metas) == ["ph03"]
