"""`semisam report`: one self-contained HTML page per round, checked in a real headless Chromium
(skipped where /usr/bin/chromium is absent): no console errors, the table and the plots drawn,
the table sorts on a click."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semisam.pipeline.presentation.report import CONFIDENCE_COLOUR, DICE_COLOUR, build_report
from semisam.schemas import RoundConfig, RoundMeta, VolumeRecord, VolumeStats, VolumeStatus
from semisam.store import open_store, sha256_file, write_outputs, write_record, write_round_meta
from tests.conftest import build_phantom_store
from tests.pipeline.cli_invoke import invoke

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium "
                                    "(apt-get install chromium)")


def _round(root, r: int, student: Path, erode: int) -> None:
    """Round ``r``: pseudo-labels = reference eroded ``erode`` voxels along axis 0 (so the
    Dice vs reference falls with ``erode``), ph05 failed."""
    write_round_meta(root, RoundMeta(
        round=r, config=RoundConfig(masker={"kind": "random_walker"}).model_dump(mode="json"),
        fingerprint=f"{r}" * 64, student_checkpoint=str(student),
        student_sha256=sha256_file(student)))
    conf_fg = {"ph01": 250, "ph02": 120, "ph03": 230, "ph04": 200}
    dice = {"ph01": 0.95, "ph02": 0.81, "ph03": 0.42, "ph04": 0.66}
    for i, vid in enumerate(("ph01", "ph02", "ph03", "ph04")):
        ref = np.asarray(root[f"volumes/{vid}/reference"][...]).astype(np.uint8)
        label = ref.copy()
        if erode:
            label[: erode * (i + 1)] = 0
        conf = np.where(label > 0, conf_fg[vid], 255).astype(np.uint8)
        sums = write_outputs(root, r, vid, label, conf, slice_axis=2)
        stats = VolumeStats(slices_total=label.shape[2],
                            slices_prompted=int(label.any(axis=(0, 1)).sum()),
                            foreground_voxels=int(label.sum()),
                            foreground_fraction=float(label.mean()),
                            mean_confidence=conf_fg[vid] / 255, student_masker_dice=dice[vid])
        write_record(root, r, VolumeRecord(
            volume_id=vid, status=VolumeStatus.done, stats=stats, checksums=sums,
            node=f"host/10.0.0.{i % 2}/abc", worker_pid=100 + i, peak_rss_mb=512.0,
            timings_s={"read": 0.1, "student": 1.5 + i, "masker": 3.0, "fuse": 0.2, "write": 0.1}))
    write_record(root, r, VolumeRecord(volume_id="ph05", status=VolumeStatus.failed,
                                       error="InputError: ph05: image holds 3 NaN voxels <x>"))


@pytest.fixture
def report_store(tmp_path, trained_student):
    """ph01..ph05 unlabeled (with references), two rounds, and a loop table next to it."""
    path = build_phantom_store(tmp_path / "s.zarr", count=6, labeled=1, seed=5)
    root = open_store(path)
    _round(root, 1, trained_student, erode=4)
    _round(root, 2, trained_student, erode=0)
    loop = tmp_path / "s.zarr.loop"
    loop.mkdir()
    (loop / "loop.json").write_text(json.dumps({"rows": [
        {"round": 0, "student": "s0.pt", "dice": 0.61}, {"round": 1, "student": "s1.pt", "dice": 0.7},
        {"round": 2, "student": "s2.pt", "dice": 0.74}]}))
    return path


def test_report_page_contents(report_store, tmp_path):
    out = tmp_path / "r" / "report.html"
    proc = invoke("report", str(report_store), "--round", "1", "--out", str(out), "--worst", "2")
    assert str(out.resolve()) in proc.stdout
    page = out.read_text()
    # self-contained: no URL other than inline data and the SVG namespace
    urls = set(re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", page))
    assert all(u.startswith("data:") for u in urls), urls
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    # summary, failures (escaped), every volume a row, stage timings, the reference Dice
    assert "4 done, 1 failed, 0 pending" in page
    assert "image holds 3 NaN voxels &lt;x&gt;" in page and "<x>" not in page
    rows = re.findall(r'<tr class="(\w+)"><td class="t" data-v="(ph\d\d)"', page)
    assert rows == [("done", "ph01"), ("done", "ph02"), ("done", "ph03"), ("done", "ph04"),
                    ("failed", "ph05")]
    for head in ("student s", "masker s", "Dice vs reference", "node", "reason"):
        assert f">{head}</th>" in page
    # plots in their colours, Dice per round from the references (both rounds) and the loop
    assert page.count(f'fill="{CONFIDENCE_COLOUR}"') >= 1 and page.count(f'fill="{DICE_COLOUR}"') >= 1
    assert "pseudo-labels vs reference" in page and "student (held-out)" in page
    assert re.search(r"<tr><td>2</td><td>1\.000</td><td>0\.740</td></tr>", page)
    # the worst-2 montages: ph02 (low confidence) then ph03 (low Dice), captioned PNGs
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) == 2 and "#1 ph02" in page and "#2 ph03" in page
    with Image.open(io.BytesIO(base64.b64decode(pngs[0]))) as im:
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.shape[1] > 4 * 48 * 3  # 4 panels (the student's recomputed) + the colour scale
    assert (rgb[:20] < 80).all(axis=-1).any()  # caption text (dark pixels) above the panels
    assert "image | student | pseudo-label | confidence" in page


def test_report_defaults_and_errors(report_store, tmp_path):
    page = build_report(report_store, worst=0)  # the last round, no montages
    assert "<h1>semisam round 2</h1>" in page and "data:image/png" not in page
    bad = invoke("report", str(report_store), "--round", "7", "--out", str(tmp_path / "x.html"),
                 code=2)
    assert "round 7: not in" in bad.output
    empty = build_phantom_store(tmp_path / "e.zarr", count=2, labeled=1)
    assert "has no rounds yet" in invoke("report", str(empty), code=2).output


def _chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHROMIUM), "--headless", "--disable-gpu", "--no-sandbox",
                           "--enable-logging=stderr", "--v=0", "--no-first-run",
                           "--user-data-dir=" + args[0], *args[1:]],
                          capture_output=True, text=True, timeout=timeout)


def _console_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln]


@needs_chromium
def test_report_in_headless_chromium(report_store, tmp_path):
    out = tmp_path / "report.html"
    invoke("report", str(report_store), "--round", "1", "--out", str(out), "--worst", "1")
    profile = str(tmp_path / "profile")

    # the check can fail: a page with a script error is caught
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><head><link rel='icon' href='data:,'></head><body>"
                      "<script>notAFunction();</script></body></html>")
    ctl = _chromium(profile, "--dump-dom", broken.as_uri())
    assert any("notAFunction" in ln for ln in _console_lines(ctl.stderr)), ctl.stderr[-2000:]

    shot = tmp_path / "shot.png"
    proc = _chromium(profile, f"--screenshot={shot}", "--window-size=1280,2000", out.as_uri())
    assert shot.is_file(), proc.stderr[-3000:]
    assert _console_lines(proc.stderr) == [], _console_lines(proc.stderr)
    shutil.copy(shot, Path("/tmp") / "semisam-report-shot.png")  # for a person to look at
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)

    def present(hex_colour: str) -> int:
        target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(rgb - target).sum(axis=-1) <= 6).sum())

    assert present(CONFIDENCE_COLOUR) > 200 and present(DICE_COLOUR) > 200  # histogram bars
    assert present("#f0f0f0") > 500  # the table's header row
    assert present("#fde8e8") > 500  # the failed volume's row

    # clicking a header sorts the table: mean conf, ascending
    sort = tmp_path / "sorted.html"
    sort.write_text(out.read_text().replace("</body>", "<script>Array.from(document.querySelectorAll("
                    "'#volumes th')).find(t=>t.textContent==='mean conf').click();</script></body>"))
    dom = _chromium(profile, "--dump-dom", sort.as_uri()).stdout
    order = re.findall(r'<tr class="\w+"><td class="t" data-v="(ph\d\d)"', dom)
    assert order == ["ph02", "ph04", "ph03", "ph01", "ph05"], order  # no value (failed) last
