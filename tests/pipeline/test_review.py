"""`inspect --worst K`: ranking of the volumes most in need of review, with overlay PNGs.

The round is written straight through the store API (no Ray), so which volume is worst is known.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from semisam.pipeline.presentation.review import rank_round, review_score
from semisam.schemas import RoundConfig, RoundMeta, VolumeRecord, VolumeStats, VolumeStatus
from semisam.store import open_store, write_outputs, write_record, write_round_meta
from tests.conftest import build_phantom_store
from tests.pipeline.cli_invoke import invoke


def _volume(root, vid: str, label: np.ndarray, conf_fg: int, dice: float | None) -> None:
    conf = np.where(label > 0, conf_fg, 255).astype(np.uint8)
    sums = write_outputs(root, 1, vid, label.astype(np.uint8), conf, slice_axis=2)
    stats = VolumeStats(slices_total=label.shape[2],
                        slices_prompted=int(label.any(axis=(0, 1)).sum()),
                        foreground_voxels=int(label.sum()), student_masker_dice=dice)
    write_record(root, 1, VolumeRecord(volume_id=vid, status=VolumeStatus.done, stats=stats,
                                       checksums=sums, node="host/10.0.0.1/abcdef12"))


@pytest.fixture
def review_store(tmp_path):
    """ph01..ph05 unlabeled: confident+agreeing, unsure, disagreeing, empty, failed."""
    path = build_phantom_store(tmp_path / "s.zarr", count=6, labeled=1, seed=5)
    root = open_store(path)
    write_round_meta(root, RoundMeta(round=1, config=RoundConfig(masker={"kind": "random_walker"}).model_dump(mode="json"),
                                     fingerprint="f" * 64,
                                     student_checkpoint=str(tmp_path / "gone.pt"),
                                     student_sha256="0" * 64))
    ref = {v: np.asarray(root[f"volumes/{v}/reference"][...]) for v in ("ph01", "ph02", "ph03")}
    _volume(root, "ph01", ref["ph01"], conf_fg=250, dice=0.95)
    _volume(root, "ph02", ref["ph02"], conf_fg=100, dice=0.90)
    _volume(root, "ph03", ref["ph03"], conf_fg=240, dice=0.30)
    _volume(root, "ph04", np.zeros_like(ref["ph01"]), conf_fg=255, dice=None)
    write_record(root, 1, VolumeRecord(volume_id="ph05", status=VolumeStatus.failed, error="bad"))
    return path


def test_review_score_terms():
    label = np.zeros((4, 4, 4), np.uint8)
    label[1:3, 1:3, 1:3] = 1
    conf = np.full(label.shape, 255, np.uint8)
    conf[label > 0] = 51  # 0.2
    score, fg = review_score(label, conf, dice=0.6)
    assert fg == pytest.approx(0.2) and score == pytest.approx(0.5 * 0.8 + 0.5 * 0.4)
    assert review_score(np.zeros_like(label), conf, dice=None) == (1.0, 0.0)


def test_ranking_order(review_store):
    items = rank_round(open_store(review_store, read_only=True), 1)
    assert [it.volume_id for it in items] == ["ph04", "ph03", "ph02", "ph01"]  # ph05 failed
    assert [it.rank for it in items] == [1, 2, 3, 4]
    assert items[0].score == 1.0 and items[-1].fg_confidence == pytest.approx(250 / 255, abs=1e-4)


def test_inspect_worst_writes_pngs(review_store, tmp_path):
    png_dir = tmp_path / "review"
    out = invoke("inspect", str(review_store), "--round", "1", "--worst", "2",
                 "--png-dir", str(png_dir), "--json")
    rows = json.loads(out.stdout)
    assert [r["volume_id"] for r in rows] == ["ph04", "ph03"]
    assert rows[1]["node"] == "host/10.0.0.1/abcdef12"
    assert sorted(p.name for p in png_dir.iterdir()) == ["01_ph04.png", "02_ph03.png"]
    with Image.open(png_dir / "02_ph03.png") as im:
        assert im.size[0] > 2.5 * im.size[1]  # image | pseudo-label | confidence (student gone)
    table = invoke("inspect", str(review_store), "--round", "1", "--worst", "3").stdout
    assert "ph02" in table and "most in need of review" in table
    bad = invoke("inspect", str(review_store), "--round", "1", "--png-dir", str(png_dir), code=2)
    assert "--png-dir needs --worst" in bad.output
