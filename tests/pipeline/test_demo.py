"""`semisam demo` end to end on a few phantoms (a shortened run of what `make demo` does)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from semisam.pipeline.demo import DEMO_STUDENT, run_demo
from semisam.store import open_store, read_record
from semisam.training import load_state, state_path
from semisam.workers.student import load_student


def test_demo_runs_every_stage(local_ray, tmp_path):
    result = run_demo(tmp_path / "demo", volumes=4, labeled=2, iterations=6, workers=1)

    assert result.summary.failed == 0 and result.summary.pending == 0
    assert sorted(v.volume_id for v in result.summary.volumes) == ["phantom_002", "phantom_003"]
    root = open_store(result.paths["store"], read_only=True)
    for vid in ("phantom_002", "phantom_003"):
        assert read_record(root, 1, vid).status.value == "done"
    # student 0 comes from the training stage (Mean Teacher state beside it), in the demo's spec
    _, spec, _ = load_student(result.paths["student"], "cpu")
    assert spec == DEMO_STUDENT
    state = load_state(state_path(result.paths["student"]))
    assert state["iteration"] == 6 and state["config"]["mean_teacher"]["enabled"]
    montage = np.asarray(Image.open(result.paths["montage"]))
    assert montage.ndim == 3 and montage.std() > 0
    assert result.pseudo_label_dice is not None and 0.0 <= result.pseudo_label_dice <= 1.0
    assert "LiteMedSAM" in result.masker_note
    assert result.paths["report"].is_file() and "phantom_002" in result.paths["report"].read_text()
    # did the masker help? the student's Dice beside the pseudo-label's, over the same two volumes
    gain = result.masker_gain
    assert gain is not None and gain.volumes == 2
    assert abs(gain.pseudo_label_dice - result.pseudo_label_dice) < 1e-3
    assert abs(gain.gain - (gain.pseudo_label_dice - gain.student_dice)) < 1e-3
    assert gain.sentence() in result.paths["report"].read_text()
