"""Did the masker help? The report's student Dice vs reference beside the pseudo-label's, the gain, and
the volume table scrolling inside its box (headless Chromium where /usr/bin/chromium exists)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from semisam.pipeline.gain import student_mask, summarize_gains, volume_gains
from semisam.pipeline.presentation.inspect import round_student_probability
from semisam.pipeline.presentation.report import build_report
from semisam.schemas import binary_classes
from semisam.store import open_store, read_image, read_output, read_round_meta
from tests.pipeline.cli_invoke import invoke
from tests.pipeline.test_report import _chromium, needs_chromium, report_store  # noqa: F401


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def test_gains_match_an_independent_student_run(report_store):  # noqa: F811
    root = open_store(report_store, read_only=True)
    gains = volume_gains(root, 1)
    assert sorted(gains) == ["ph01", "ph02", "ph03", "ph04"]  # ph05 failed: not scored
    meta = read_round_meta(root, 1)
    for vid, g in gains.items():
        ref = np.asarray(root[f"volumes/{vid}/reference"][...])
        prob = round_student_probability(meta, read_image(root, vid))
        assert g.student_dice == pytest.approx(_dice(prob > 0.5, ref), abs=1e-4)
        assert g.pseudo_label_dice == pytest.approx(
            _dice(read_output(root, 1, "pseudo_label", vid), ref), abs=1e-4)
        assert g.gain == pytest.approx(g.pseudo_label_dice - g.student_dice, abs=2e-4)
    summary = summarize_gains(gains)
    assert summary.volumes == 4 and summary.better + summary.worse <= 4
    assert summary.gain == pytest.approx(np.mean([g.gain for g in gains.values()]), abs=1e-4)
    # round 2's pseudo-labels are the references: the gain is 1 - the student's Dice
    exact = volume_gains(root, 2)
    assert all(g.pseudo_label_dice == 1.0 and g.gain == pytest.approx(1 - g.student_dice, abs=1e-4)
               for g in exact.values())


def test_student_mask_classes():
    prob = np.zeros((3, 2, 2, 1), np.float32)
    prob[0], prob[2, 0, 0, 0] = 0.6, 0.9
    from semisam.schemas import ClassMap

    assert student_mask(prob, ClassMap(names={1: "a", 4: "b"}))[:, :, 0].tolist() == [[4, 0], [0, 0]]
    assert student_mask(np.array([[[0.2, 0.7]]]), binary_classes()).tolist() == [[[0, 1]]]


def test_report_shows_student_beside_pseudo_label(report_store, tmp_path):  # noqa: F811
    page = build_report(report_store, 1, worst=0)
    gains = volume_gains(open_store(report_store, read_only=True), 1)
    summary = summarize_gains(gains)
    assert "did the masker help?" in page and summary.sentence() in page
    for head in ("student Dice vs reference", "Dice vs reference", "gain (pseudo-label - student)"):
        assert f">{head}</th>" in page
    for vid, g in gains.items():
        row = re.search(rf'<tr class="done"><td class="t" data-v="{vid}">.*?</tr>', page).group(0)
        assert f">{g.student_dice:.3f}</td>" in row and f">{g.gain:.3f}</td>" in row
    assert '<div class="scroll" id="volumes-box"><table class="vol" id="volumes">' in page
    # without the student re-run (--no-student-panels) the columns stay, empty
    quick = build_report(report_store, 1, worst=0, student_panels=False)
    assert "did the masker help?" not in quick and ">student Dice vs reference</th>" in quick
    out = tmp_path / "r.html"
    invoke("report", str(report_store), "--round", "1", "--out", str(out), "--worst", "0")
    assert summary.sentence() in out.read_text()


@needs_chromium
def test_wide_table_scrolls_inside_its_box(report_store, tmp_path):  # noqa: F811
    """At 700 px the volume table is wider than the window: its box scrolls sideways, the page
    itself does not grow wider than the window."""
    page = build_report(report_store, 1, worst=0)
    probe = ("<script>var b=document.getElementById('volumes-box');"
             "document.title=['box',b.scrollWidth>b.clientWidth+50,'page',"
             "document.documentElement.scrollWidth<=window.innerWidth].join(':');</script></body>")
    html = tmp_path / "probe.html"
    html.write_text(page.replace("</body>", probe))
    dom = _chromium(str(tmp_path / "profile"), "--window-size=700,900", "--dump-dom",
                    html.as_uri()).stdout
    assert "<title>box:true:page:true</title>" in dom, re.findall(r"<title>.*?</title>", dom)
    # the check can fail: the same table outside its box widens the page
    unboxed = tmp_path / "unboxed.html"
    unboxed.write_text(html.read_text().replace('class="scroll" id="volumes-box"', 'id="volumes-box"'))
    dom = _chromium(str(tmp_path / "profile"), "--window-size=700,900", "--dump-dom",
                    unboxed.as_uri()).stdout
    assert "page:false" in dom


def test_report_lists_the_suggested_volumes(report_store):  # noqa: F811
    from semisam.pipeline.suggest import suggest

    page = build_report(report_store, 1, worst=0, student_panels=False)
    _, picks = suggest(open_store(report_store, read_only=True), 1, 5)
    table = re.search(r'<table class="vol" id="suggest">.*?</table>', page).group(0)
    assert re.findall(r'<td class="t">(ph\d\d)</td>', table) == [p.volume_id for p in picks]
    # (1 - Dice) + (1 - confidence/255): ph02 0.19 + 0.53, ph03 0.58 + 0.10, ph04 0.34 + 0.22,
    # ph01 0.05 + 0.02
    assert [p.volume_id for p in picks] == ["ph02", "ph03", "ph04", "ph01"]
