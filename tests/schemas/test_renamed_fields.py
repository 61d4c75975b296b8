"""Fields that said "sam" for any masker are named for the masker; stores written before the
rename still read (old names in, new names out)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from semisam.schemas import ClassStats, RoundMeta, VolumeStats
from semisam.schemas.records import OLD_NAMES


def test_old_round_meta_reads_under_the_new_names() -> None:
    old = {"round": 1, "config": {}, "fingerprint": "f", "student_checkpoint": "s.pt",
           "student_sha256": "a" * 64, "sam_checkpoint": "lite.pth", "sam_sha256": "b" * 64}
    meta = RoundMeta.model_validate(old)
    assert (meta.masker_checkpoint, meta.masker_sha256) == ("lite.pth", "b" * 64)
    dumped = json.loads(meta.model_dump_json())
    assert dumped["masker_checkpoint"] == "lite.pth" and dumped["masker_sha256"] == "b" * 64
    assert "sam_checkpoint" not in dumped and "sam_sha256" not in dumped
    assert RoundMeta.model_validate(dumped) == meta  # what is written reads back


@pytest.mark.parametrize("model", [VolumeStats, ClassStats])
def test_old_stats_read_under_the_new_name(model: type) -> None:
    extra = {"name": "atrium"} if model is ClassStats else {}
    stats = model.model_validate({"student_sam_dice": 0.8, **extra})
    assert stats.student_masker_dice == 0.8
    dumped = json.loads(stats.model_dump_json())
    assert dumped["student_masker_dice"] == 0.8 and "student_sam_dice" not in dumped
    assert model(student_masker_dice=0.7, **extra).student_masker_dice == 0.7


def test_unknown_names_are_still_refused() -> None:
    with pytest.raises(ValidationError, match="sam_dice"):
        VolumeStats.model_validate({"student_sam_dice": 0.8, "sam_dice": 0.1})
    assert set(OLD_NAMES.values()) == {"student_sam_dice", "sam_checkpoint", "sam_sha256"}
