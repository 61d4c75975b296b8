"""Tables in logs: when stdout is not a terminal, one Markdown line per volume, however wide."""

from __future__ import annotations

import subprocess
import sys

from semisam.pipeline.presentation import render
from semisam.pipeline.rounds.summary import RoundSummary, VolumeRow
from semisam.schemas import VolumeStatus

LONG_ERROR = ("InputError: /data/incoming/site-07/very/long/path/to/volume_0042.nii.gz: image holds "
              "17 NaN voxels | first at (3, 4, 5)")


def _summary() -> RoundSummary:
    rows = [VolumeRow(volume_id=f"la_{i:03d}", status=VolumeStatus.done, node="node-0123456789abcdef",
                      slices_prompted=30, slices_total=88, foreground_fraction=0.0123,
                      mean_confidence=0.8765, student_masker_dice=0.9123, seconds=12.5)
            for i in range(3)]
    rows.append(VolumeRow(volume_id="la_bad", status=VolumeStatus.failed, error=LONG_ERROR))
    return RoundSummary(round=1, status="finished_with_failures", total=4, done=3, failed=1,
                        pending=0, per_node={"node-0123456789abcdef": 3}, volumes=rows)


def test_round_table_in_a_log_is_one_markdown_row_per_volume(capsys, monkeypatch):
    monkeypatch.delenv("SEMISAM_TABLES", raising=False)
    assert render.markdown_tables()  # pytest's captured stdout is no terminal
    render.round_summary(_summary(), as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("round 1: 3 done, 1 failed")
    assert lines[1].startswith("| volume | status | node |")
    assert lines[2].startswith("|---|")
    body = [ln for ln in lines if ln.startswith("| la_")]
    assert len(body) == 4  # one line per volume, the long error included
    bad = next(ln for ln in body if ln.startswith("| la_bad "))
    assert "first at (3, 4, 5)" in bad and "\\| first" in bad  # the pipe escaped, not a column
    assert bad.count(" | ") == 8  # 9 columns
    assert lines[-1] == "per node: node-0123456789abcdef: 3"


def test_forced_rich_and_markdown(capsys, monkeypatch):
    monkeypatch.setenv("SEMISAM_TABLES", "rich")
    assert not render.markdown_tables()
    render.print_table("t", ("a", "b"), [("1", "2")])
    out = capsys.readouterr().out
    assert "| a | b |" not in out and "a" in out  # a rich table, not Markdown
    monkeypatch.setenv("SEMISAM_TABLES", "markdown")
    render.print_table("t", ("a", "b"), [("1", "x\ny")])
    assert capsys.readouterr().out.splitlines() == ["t", "| a | b |", "|---|---|", "| 1 | x y |"]


def test_cli_into_a_file_keeps_rows_whole(tmp_path):
    """`semisam inspect` with stdout redirected to a file (what `make demo > log` does)."""
    code = ("from semisam.pipeline.presentation import render\n"
            "from tests.pipeline.test_render import _summary\n"
            "render.round_summary(_summary(), as_json=False)\n")
    log = tmp_path / "log.txt"
    with open(log, "w") as fh:
        subprocess.run([sys.executable, "-c", code], stdout=fh, check=True,
                       env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"}, cwd=str(_repo()))
    lines = log.read_text().splitlines()
    assert sum(ln.startswith("| la_") for ln in lines) == 4
    assert max(len(ln) for ln in lines) > 80  # not folded to the 80 columns of a default console


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]


def test_volumes_that_kept_the_students_answer_are_named(capsys, monkeypatch):
    monkeypatch.delenv("SEMISAM_TABLES", raising=False)
    summary = _summary()
    summary.volumes[1].masker_rejected = True
    render.round_summary(summary, as_json=False)
    lines = capsys.readouterr().out.splitlines()
    kept = [ln for ln in lines if "kept the student's answer" in ln]
    assert len(kept) == 1 and kept[0].startswith("1 volume(s)") and kept[0].endswith(": la_001")
    render.round_summary(_summary(), as_json=False)
    assert "kept the student's answer" not in capsys.readouterr().out
