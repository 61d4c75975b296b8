"""A full round on phantoms with a real local Ray and a real Zarr store."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from semisam.pipeline.rounds.driver import run_round
from semisam.schemas import CheckpointError, RoundConfig, RoundError, VolumeStatus
from semisam.store import (
    list_metas,
    list_rounds,
    open_store,
    read_output,
    read_record,
    read_round_meta,
)
from tests.conftest import SPACING, build_phantom_store, phantom_affine


def _config(workers: int = 2) -> RoundConfig:
    cfg = RoundConfig(masker={"kind": "random_walker"})
    cfg.runtime.workers = workers
    return cfg


def test_full_round(local_ray, phantom_store, trained_student):
    summary = run_round(phantom_store, 1, trained_student, _config(), show_progress=False)
    root = open_store(phantom_store, read_only=True)
    unlabeled = [m for m in list_metas(root) if not m.labeled]
    assert summary.total == len(unlabeled) == 4
    assert summary.done == 4 and summary.failed == 0 and summary.pending == 0
    assert summary.status == "finished"
    meta = read_round_meta(root, 1)
    stored = {**meta.config, "prompts": dict(meta.config["prompts"])}
    prior = stored["prompts"].pop("component_prior")  # fitted by the round on the labeled volumes
    expected = _config().model_dump(mode="json")
    assert expected["prompts"].pop("component_prior") is None
    assert stored == expected and len(meta.fingerprint) == 64
    assert set(prior) == {"1"} and prior["1"]["volumes"] == 2
    dices = []
    for m in unlabeled:
        pl = read_output(root, 1, "pseudo_label", m.volume_id)
        conf = read_output(root, 1, "confidence", m.volume_id)
        assert pl.shape == conf.shape == m.shape
        assert pl.dtype == np.uint8 and conf.dtype == np.uint8
        assert set(np.unique(pl)) <= {0, 1}
        arr = root[f"rounds/1/pseudo_label/{m.volume_id}"]
        assert arr.attrs["spacing"] == list(SPACING)
        np.testing.assert_allclose(arr.attrs["affine"], phantom_affine())
        assert "value/255" in root[f"rounds/1/confidence/{m.volume_id}"].attrs["encoding"]
        record = read_record(root, 1, m.volume_id)
        assert record.status == VolumeStatus.done and record.stats.slices_prompted > 0
        assert 0.0 <= record.stats.mean_confidence <= 1.0
        assert set(record.timings_s) >= {"read", "student", "prompts", "masker", "write"}
        ref = np.asarray(root[f"volumes/{m.volume_id}/reference"][...]) > 0
        dices.append(2 * np.logical_and(pl > 0, ref).sum() / (pl.sum() + ref.sum()))
    # the pseudo-labels must be meaningful, not merely well-formed
    assert np.mean(dices) > 0.6, dices


def test_rerun_skips_done_volumes(local_ray, phantom_store, trained_student):
    run_round(phantom_store, 1, trained_student, _config(), show_progress=False)
    root = open_store(phantom_store, read_only=True)
    before = {m.volume_id: read_record(root, 1, m.volume_id).finished_at for m in list_metas(root)
              if not m.labeled}
    again = run_round(phantom_store, 1, trained_student, _config(workers=1), show_progress=False)
    assert again.skipped == 4 and again.done == 4
    after = {vid: read_record(root, 1, vid).finished_at for vid in before}
    assert before == after


def test_rerun_of_a_finished_round_loads_no_model_and_starts_no_ray(local_ray, phantom_store,
                                                                    trained_student):
    """Same config and checkpoint bytes as the stored round: the driver does not load the
    checkpoints again (they passed when the round began), so a finished round's rerun in a
    fresh process imports neither torch nor MONAI and starts no Ray."""
    run_round(phantom_store, 1, trained_student, _config(workers=1), show_progress=False)
    code = ("import sys, ray; from semisam.pipeline.rounds.driver import run_round; "
            "from semisam.schemas import RoundConfig; "
            "s = run_round(sys.argv[1], 1, sys.argv[2], RoundConfig(masker={'kind': 'random_walker'}), show_progress=False); "
            "print(s.skipped, s.done, 'torch' in sys.modules, 'monai' in sys.modules, "
            "ray.is_initialized())")
    out = subprocess.run([sys.executable, "-c", code, str(phantom_store), str(trained_student)],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split()[-5:] == ["4", "4", "False", "False", "False"], out.stderr[-2000:]


def test_checkpoint_corrupted_after_the_round_began_is_caught_on_resume(
        local_ray, phantom_store, trained_student, tmp_path):
    """New checkpoint bytes (another fingerprint) are loaded and checked again: a broken file
    is a CheckpointError naming it, not a fingerprint refusal or a worker that cannot start."""
    student = tmp_path / "student.pt"
    shutil.copy(trained_student, student)
    run_round(phantom_store, 1, student, _config(workers=1), show_progress=False)
    student.write_bytes(student.read_bytes()[:1000])  # truncated
    with pytest.raises(CheckpointError, match="student.pt"):
        run_round(phantom_store, 1, student, _config(workers=1), show_progress=False)


def test_changed_config_refused_then_forced(local_ray, phantom_store, trained_student):
    run_round(phantom_store, 1, trained_student, _config(), show_progress=False)
    changed = _config()
    changed.prompts.box_margin = 9
    with pytest.raises(RoundError, match="--force"):
        run_round(phantom_store, 1, trained_student, changed, show_progress=False)
    summary = run_round(phantom_store, 1, trained_student, changed, force=True, show_progress=False)
    assert summary.done == 4 and summary.skipped == 0


def test_bad_volume_is_recorded_failed_and_round_completes(local_ray, phantom_store, trained_student):
    root = open_store(phantom_store)
    img = root["volumes/ph03/image"]
    data = img[...]
    data[3, 4, 5] = np.nan
    img[...] = data  # bypasses ingest's checks, as a store written by another tool might
    summary = run_round(phantom_store, 1, trained_student, _config(), show_progress=False)
    assert summary.done == 3 and summary.failed == 1
    assert summary.status == "finished_with_failures"
    record = read_record(root, 1, "ph03")
    assert record.status == VolumeStatus.failed
    assert "ph03" in record.error and "NaN" in record.error and "\n" not in record.error
    assert read_output(root, 1, "pseudo_label", "ph03") is None


def test_refused_start_leaves_no_round_behind(tmp_path, trained_student):
    """A store without unlabeled volumes is refused; the lock it took is no round: the store
    lists no rounds afterwards."""
    store = build_phantom_store(tmp_path / "labeled.zarr", count=2, labeled=2, seed=4)
    with pytest.raises(RoundError, match="no unlabeled volumes"):
        run_round(store, 1, trained_student, _config(workers=1), show_progress=False)
    root = open_store(store, read_only=True)
    assert "rounds/1/lock" in root and list_rounds(root) == []

