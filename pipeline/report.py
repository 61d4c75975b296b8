"""``semisam report``: one self-contained HTML page about a round, for the browser.

The page needs no network: CSS and the table-sorting script are inline, the plots are inline SVG
and the montages base64 PNG. It holds:

* the round summary: store, status, fingerprint, masker / fusion / slice axis, student
  checkpoint, counts, per-node counts, wall time of the volumes, and "did SAM help?" (mean
  student and pseudo-label Dice vs reference, the gain, on how many volumes it was better);
* a per-volume table, sortable by any column (click a header): status, attempt, reason,
  node, slices prompted, foreground fraction, mean confidence, student-vs-masker Dice, the
  pseudo-label's Dice against the ground truth where the store has it (``reference``) beside
  the student's own Dice there and the gain (pseudo-label - student: did SAM help?, `gain`;
  the student is re-run from the round's checkpoint unless ``student_panels`` is off), the
  timing of each stage, peak memory; the table scrolls sideways inside its box, the volume
  column staying in view;
* the distributions over finished volumes of the mean confidence and of the student-vs-masker
  Dice (histograms);
* which unlabeled volumes to label next (`suggest`: the top 5 and their score's terms);
* the K volumes most in need of review (`review.rank_round`) as captioned montages
  (image | student | pseudo-label | confidence, with the confidence colour scale);
* Dice per round: each round's mean pseudo-label Dice against the ground truth where the store
  has it, and the held-out Dice of each student from a ``semisam loop`` table
  (``STORE.loop/loop.json``, or ``loop_state``) where there is one.

Multi-class stores (`semisam.store.read_class_map`): a pseudo-label's Dice against the ground
truth is the mean over the store's classes of each class's Dice (``label == v`` against
``reference == v``, as `semisam evaluate` and `semisam loop` score them), so a structure drawn
as another counts as wrong; the summary names the classes, and the montages and their legend
colour each structure by its class.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import zarr

from semisam.schemas import ClassMap, ConfigError, VolumeWork, volume_work
from semisam.store import (
    list_metas,
    list_rounds,
    read_class_map,
    read_output,
    read_record,
    read_round_meta,
)
from semisam.training.metrics import class_dice

log = logging.getLogger(__name__)

CONFIDENCE_COLOUR = "#2a9d8f"  # histogram bars of the mean confidence
DICE_COLOUR = "#e76f51"  # histogram bars of the student-vs-masker Dice
ROUND_COLOURS = ("#6a4c93", "#1982c4")  # Dice per round: pseudo-labels, students


def _esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


# --------------------------------------------------------------------------- data


def _reference(root: zarr.Group, volume_id: str) -> np.ndarray | None:
    """The ``reference`` array of a volume ingested as unlabeled (never a training label)."""
    key = f"volumes/{volume_id}/reference"
    return np.asarray(root[key][...], dtype=np.uint8) if key in root else None


def reference_dice(label: np.ndarray, ref: np.ndarray, classes: ClassMap | None = None) -> float:
    """Dice of a pseudo-label against its ground truth, both ``XxYxZ`` uint8 class values:
    foreground against foreground for a one-structure map (or None), else the mean over the
    map's classes ``v`` of the Dice of ``label == v`` against ``ref == v`` (1 for a class
    absent from both)."""
    return class_dice(label, ref, classes.values if classes is not None and classes.multiclass
                      else None)


def volume_rows(root: zarr.Group, round_index: int) -> tuple[list[dict], list[str]]:
    """One dict per unlabeled volume of the round, and the timing stages seen (in order); a
    volume's status is the one rule's (`schemas.volume_work`)."""
    classes = read_class_map(root)
    rows, stages = [], []
    for meta in list_metas(root):
        if meta.labeled:
            continue
        vid = meta.volume_id
        record = read_record(root, round_index, vid)
        work = volume_work(record)
        row = {"volume": vid, "status": work.status.value, "attempt": None, "reason": None, "node": None,
               "prompted": None, "slices": None, "fg_fraction": None, "mean_confidence": None,
               "student_masker_dice": None, "reference_dice": None, "timings": {},
               "seconds": None, "peak_rss_mb": None}
        if record is not None:
            row.update(attempt=record.attempt, reason=record.error,
                       node=record.node, timings=dict(record.timings_s),
                       seconds=round(sum(record.timings_s.values()), 3) if record.timings_s else None,
                       peak_rss_mb=record.peak_rss_mb)
            for stage in record.timings_s:
                if stage not in stages:
                    stages.append(stage)
            if record.stats is not None:
                s = record.stats
                row.update(prompted=s.slices_prompted, slices=s.slices_total,
                           fg_fraction=s.foreground_fraction, mean_confidence=s.mean_confidence,
                           student_masker_dice=s.student_sam_dice)
            if work is VolumeWork.done:
                ref = _reference(root, vid)
                if ref is not None:
                    label = read_output(root, round_index, "pseudo_label", vid)
                    if label is not None and label.shape == ref.shape:
                        row["reference_dice"] = round(reference_dice(label, ref, classes), 4)
        rows.append(row)
    return rows, stages


def round_reference_dice(root: zarr.Group) -> dict[int, float]:
    """Round -> mean pseudo-label Dice against ``reference`` over its finished volumes that
    have one (rounds without any are left out; multi-class stores: `reference_dice`)."""
    classes = read_class_map(root)
    refs = {m.volume_id: _reference(root, m.volume_id) for m in list_metas(root) if not m.labeled}
    refs = {k: v for k, v in refs.items() if v is not None}
    out: dict[int, float] = {}
    if not refs:
        return out
    for r in list_rounds(root):
        scores = []
        for vid, ref in refs.items():
            record = read_record(root, r, vid)
            if volume_work(record) is not VolumeWork.done:
                continue
            label = read_output(root, r, "pseudo_label", vid)
            if label is not None and label.shape == ref.shape:
                scores.append(reference_dice(label, ref, classes))
        if scores:
            out[r] = round(float(np.mean(scores)), 4)
    return out


def loop_rows(store: str, loop_state: Path | None) -> list[dict]:
    """Rows of a `semisam loop` table (``loop.json``), or [] when there is none."""
    path = Path(loop_state) if loop_state else None
    if path is None:
        if "://" in str(store):
            return []
        path = Path(str(store).rstrip("/") + ".loop") / "loop.json"
    elif path.is_dir():
        path = path / "loop.json"
    if not path.is_file():
        return []
    try:
        state = json.loads(path.read_text())
        return [r for r in state.get("rows", []) if isinstance(r, dict) and "round" in r]
    except (OSError, ValueError) as exc:
        log.warning("%s: loop table not readable (%s); left out of the report", path, exc)
        return []


def _montages(root: zarr.Group, round_index: int, worst: int, student_panels: bool) -> list[dict]:
    from .inspect import montage_image
    from .review import rank_round

    out = []
    for item in rank_round(root, round_index)[:worst]:
        img = montage_image(root, round_index, item.volume_id, student=student_panels)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append({"rank": item.rank, "volume": item.volume_id, "score": item.score,
                    "fg_confidence": item.fg_confidence, "dice": item.student_sam_dice,
                    "png": base64.b64encode(buf.getvalue()).decode("ascii")})
    return out


# --------------------------------------------------------------------------- plots (SVG)


def histogram_svg(values: list[float], title: str, colour: str, xlabel: str,
                  bins: int = 10, width: int = 420, height: int = 230) -> str:
    """Inline SVG histogram of ``values`` in [0, 1]."""
    counts = np.histogram(np.clip(values, 0, 1), bins=bins, range=(0, 1))[0] if values else \
        np.zeros(bins, int)
    left, right, top, bottom = 40, 10, 28, 40
    pw, ph = width - left - right, height - top - bottom
    peak = max(1, int(counts.max()))
    parts = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{_esc(title)}">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" class="pt">{_esc(title)}</text>']
    bw = pw / bins
    for i, c in enumerate(counts):
        h = ph * c / peak
        parts.append(f'<rect x="{left + i * bw + 1:.1f}" y="{top + ph - h:.1f}" '
                     f'width="{bw - 2:.1f}" height="{h:.1f}" fill="{colour}">'
                     f'<title>{i / bins:.1f}-{(i + 1) / bins:.1f}: {int(c)}</title></rect>')
    parts.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" '
                 'stroke="#333"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#333"/>')
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        x = left + pw * t
        parts.append(f'<text x="{x:.1f}" y="{top + ph + 14}" text-anchor="middle" '
                     f'class="tk">{t:g}</text>')
    for t in sorted({0, peak // 2, peak}):
        y = top + ph - ph * t / peak
        parts.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end" class="tk">{t}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" '
                 f'class="tk">{_esc(xlabel)} (n = {len(values)})</text>')
    parts.append("</svg>")
    return "".join(parts)


def rounds_svg(series: dict[str, dict[int, float]], width: int = 580, height: int = 260) -> str:
    """Inline SVG line plot: Dice (0-1) against round, one line per series."""
    rounds = sorted({r for s in series.values() for r in s})
    left, right, top, bottom = 40, 210, 28, 36
    pw, ph = width - left - right, height - top - bottom
    lo, hi = (rounds[0], rounds[-1]) if rounds else (0, 1)
    span = max(1, hi - lo)

    def xy(r: int, d: float) -> tuple[float, float]:
        return left + pw * (r - lo) / span, top + ph * (1 - d)

    parts = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="Dice per round">',
             f'<text x="{left + pw / 2}" y="16" text-anchor="middle" class="pt">Dice per round</text>',
             f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#333"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#333"/>']
    for t in (0, 0.5, 1.0):
        parts.append(f'<text x="{left - 5}" y="{top + ph * (1 - t) + 4:.1f}" text-anchor="end" '
                     f'class="tk">{t:g}</text>')
    for r in rounds:
        x, _ = xy(r, 0)
        parts.append(f'<text x="{x:.1f}" y="{top + ph + 14}" text-anchor="middle" class="tk">{r}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle" class="tk">round</text>')
    for k, (name, points) in enumerate(series.items()):
        colour = ROUND_COLOURS[k % len(ROUND_COLOURS)]
        pts = [xy(r, d) for r, d in sorted(points.items())]
        if len(pts) > 1:
            parts.append('<polyline fill="none" stroke-width="2" stroke="' + colour + '" points="'
                         + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
        for (r, d), (x, y) in zip(sorted(points.items()), pts):
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}">'
                         f'<title>round {r}: {d:.3f}</title></circle>')
        ly = top + 14 + 18 * k
        parts.append(f'<rect x="{left + pw + 12}" y="{ly - 9}" width="12" height="10" fill="{colour}"/>'
                     f'<text x="{left + pw + 28}" y="{ly}" class="tk">{_esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- page

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px}
.summary{border-collapse:collapse}.summary td{padding:2px 12px 2px 0;vertical-align:top}
.summary td:first-child{color:#555}
table.vol{border-collapse:collapse;font-size:13px}
.scroll{overflow-x:auto;max-width:100%;border:1px solid #ddd}
.scroll table.vol td:first-child,.scroll table.vol th:first-child{position:sticky;left:0;z-index:1}
.scroll table.vol td:first-child{background:#fff}.scroll tr.failed td:first-child{background:#fde8e8}
table.vol td.up{color:#1a7f37}table.vol td.down{color:#c0392b}
table.vol th,table.vol td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}
table.vol td.t,table.vol th.t{text-align:left}
table.vol td.reason{white-space:normal;min-width:240px;max-width:420px;text-align:left}
table.vol th{background:#f0f0f0;cursor:pointer;user-select:none}
table.vol th[aria-sort=ascending]::after{content:' \\25B2'}
table.vol th[aria-sort=descending]::after{content:' \\25BC'}
tr.failed td{background:#fde8e8}tr.pending td{color:#888}
.plots{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}.pt{font-size:13px;font-weight:600}.tk{font-size:11px}
figure{margin:0 0 18px}figcaption{font-size:12px;color:#444;margin-top:4px}
img.montage{image-rendering:pixelated;border:1px solid #ddd;max-width:100%}
.legend{font-size:12px;color:#444}.bar{display:inline-block;width:140px;height:10px;
vertical-align:middle;background:linear-gradient(to right,rgb(0,0,120),rgb(255,200,0))}
.muted{color:#777}
"""

_JS = """
(function(){
  var table=document.getElementById('volumes');
  if(!table){return;}
  var heads=table.tHead.rows[0].cells;
  function key(cell){
    var v=cell.getAttribute('data-v');
    if(v===null||v===''){return null;}
    var n=Number(v);
    return isNaN(n)?v.toLowerCase():n;
  }
  Array.prototype.forEach.call(heads,function(th,col){
    th.addEventListener('click',function(){
      var asc=th.getAttribute('aria-sort')!=='ascending';
      Array.prototype.forEach.call(heads,function(h){h.removeAttribute('aria-sort');});
      th.setAttribute('aria-sort',asc?'ascending':'descending');
      var body=table.tBodies[0];
      var rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){
        var x=key(a.cells[col]),y=key(b.cells[col]);
        if(x===y){return 0;}
        if(x===null){return 1;}
        if(y===null){return -1;}
        var c=(typeof x===typeof y)?(x<y?-1:1):(typeof x==='number'?-1:1);
        return asc?c:-c;
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
})();
"""


def _td(value, digits: int = 3, cls: str = "") -> str:
    sort = "" if value is None else (repr(float(value)) if isinstance(value, (int, float))
                                     and not isinstance(value, bool) else str(value))
    if isinstance(value, float) and not math.isfinite(value):
        sort = ""
    c = f' class="{cls}"' if cls else ""
    return f'<td{c} data-v="{_esc(sort)}">{_esc(_num(value, digits))}</td>'


def _table(rows: list[dict], stages: list[str], with_reference: bool) -> str:
    cols = [("volume", "t"), ("status", "t"), ("attempt", ""), ("reason", "t"), ("node", "t"),
            ("prompted/slices", ""), ("fg frac", ""), ("mean conf", ""),
            ("student-vs-masker Dice", "")]
    if with_reference:
        cols += [("student Dice vs reference", ""), ("Dice vs reference", ""),
                 ("gain (pseudo-label - student)", "")]
    cols += [(f"{s} s", "") for s in stages] + [("total s", ""), ("peak RSS MB", "")]
    head = "".join(f'<th class="{c}" scope="col">{_esc(n)}</th>' for n, c in cols)
    body = []
    for r in rows:
        prompted = (f"{r['prompted']}/{r['slices']}" if r["slices"] is not None else None)
        cells = [_td(r["volume"], cls="t"), _td(r["status"], cls="t"), _td(r["attempt"]),
                 _td(r["reason"], cls="reason"), _td(r["node"], cls="t"),
                 f'<td data-v="{r["prompted"] if r["prompted"] is not None else ""}">'
                 f'{_esc(prompted or "-")}</td>',
                 _td(r["fg_fraction"], 4), _td(r["mean_confidence"]), _td(r["student_masker_dice"])]
        if with_reference:
            cells += [_td(r.get("student_reference_dice")), _td(r["reference_dice"]),
                      _td(r.get("gain"), cls=_gain_class(r.get("gain")))]
        cells += [_td(r["timings"].get(s), 2) for s in stages]
        cells += [_td(r["seconds"], 2), _td(r["peak_rss_mb"], 0)]
        body.append(f'<tr class="{_esc(r["status"])}">' + "".join(cells) + "</tr>")
    return (f'<div class="scroll" id="volumes-box"><table class="vol" id="volumes"><thead><tr>'
            f'{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def _suggest_section(root: zarr.Group, round_index: int, k: int = 5) -> str:
    """The ``k`` unlabeled volumes `semisam suggest` would have labeled next, with the terms of
    their score ('' when no volume finished)."""
    from .suggest import suggest

    _, picks = suggest(root, round_index, k)
    if not picks:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("rank", "volume", "score", "disagreement",
                                             "uncertainty", "rejected"))
    body = "".join(f"<tr><td>{p.rank}</td><td class=\"t\">{_esc(p.volume_id)}</td>"
                   f"<td>{p.score:.3f}</td><td>{p.disagreement:.3f}</td>"
                   f"<td>{p.uncertainty:.3f}</td><td>{p.rejected:.0f}</td></tr>" for p in picks)
    return ("<h2>Label next (semisam suggest)</h2><p class=\"muted\">score = (1 - student-vs-"
            "masker Dice) + (1 - mean confidence over the pseudo-label's foreground) + (1 if "
            "fusion rejected the masker); highest first.</p>"
            f'<table class="vol" id="suggest"><thead><tr>{head}</tr></thead><tbody>{body}'
            "</tbody></table>")


def _gain_class(gain: float | None) -> str:
    """Cell class of a gain: green when the pseudo-label beat the student, red when worse."""
    return "" if gain is None or gain == 0 else "up" if gain > 0 else "down"


def _add_gains(root: zarr.Group, round_index: int, rows: list[dict]):
    """Each row's student Dice vs reference and gain (`gain.volume_gains`); their summary."""
    from .gain import summarize_gains, volume_gains

    gains = volume_gains(root, round_index)
    for r in rows:
        g = gains.get(r["volume"])
        if g is not None:
            r["student_reference_dice"], r["gain"] = g.student_dice, g.gain
    return summarize_gains(gains)


def build_report(store: str | Path, round_index: int | None = None, *, worst: int = 6,
                 loop_state: Path | None = None, student_panels: bool = True) -> str:
    """The HTML page (a string) of round ``round_index`` (default: the store's last round).

    Raises:
        ConfigError: the store has no such round (or no round at all), ``worst`` < 0.
    """
    from semisam.store import open_store

    if worst < 0:
        raise ConfigError(f"--worst must be >= 0, got {worst}")
    store = str(store)
    root = open_store(store, read_only=True)
    rounds = list_rounds(root)
    if round_index is None:
        if not rounds:
            raise ConfigError(f"{store}: has no rounds yet (run-round first)")
        round_index = rounds[-1]
    meta = read_round_meta(root, round_index)
    if meta is None:
        raise ConfigError(f"round {round_index}: not in {store} (rounds: {rounds or 'none'})")
    started = time.perf_counter()
    rows, stages = volume_rows(root, round_index)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "pending")}
    per_node: dict[str, int] = {}
    for r in rows:
        if r["status"] == "done":
            per_node[r["node"] or "?"] = per_node.get(r["node"] or "?", 0) + 1
    done = [r for r in rows if r["status"] == "done"]
    conf = [r["mean_confidence"] for r in done if r["mean_confidence"] is not None]
    dice = [r["student_masker_dice"] for r in done if r["student_masker_dice"] is not None]
    with_reference = any(r["reference_dice"] is not None for r in rows)
    helped = _add_gains(root, round_index, rows) if with_reference and student_panels else None
    series: dict[str, dict[int, float]] = {}
    ref_dice = round_reference_dice(root)
    if ref_dice:
        series["pseudo-labels vs reference"] = ref_dice
    loop = loop_rows(store, loop_state)
    student_dice = {int(r["round"]): float(r["dice"]) for r in loop if r.get("dice") is not None}
    if student_dice:
        series["student (held-out)"] = student_dice
    montages = _montages(root, round_index, worst, student_panels) if worst else []
    classes = read_class_map(root)
    cfg = meta.config
    masker = cfg.get("masker", {}).get("kind", "?")
    summary_rows = [
        ("store", store), ("round", f"{round_index} of rounds {rounds}"),
        ("status", meta.status.value), ("fingerprint", meta.fingerprint[:16]),
        ("volumes", f"{len(rows)} unlabeled: {counts['done']} done, {counts['failed']} failed, "
                    f"{counts['pending']} pending"),
        ("masker", masker + (f" ({meta.sam_checkpoint})" if meta.sam_checkpoint else "")),
        ("fusion", cfg.get("fusion", {}).get("mode", "?")),
        ("slice axis", cfg.get("prompts", {}).get("slice_axis", "?")),
        ("student", f"{meta.student_checkpoint} (sha256 {meta.student_sha256[:12]})"),
        ("started / finished", f"{meta.created_at} / {meta.finished_at or '-'}"),
        ("volume time", f"{sum(r['seconds'] or 0 for r in rows):.1f} s over all volumes"),
        ("per node", ", ".join(f"{n}: {c}" for n, c in sorted(per_node.items())) or "-"),
    ]
    if dice:
        summary_rows.append(("student-vs-masker Dice", f"mean {np.mean(dice):.3f}, "
                                                       f"min {np.min(dice):.3f}"))
    if classes.multiclass:
        summary_rows.insert(2, ("classes", ", ".join(f"{v}={n}" for v, n in classes.names.items())))
    if with_reference:
        refs = [r["reference_dice"] for r in rows if r["reference_dice"] is not None]
        per_class = " (per class, mean over the classes)" if classes.multiclass else ""
        summary_rows.append((f"pseudo-label Dice vs reference{per_class}",
                             f"mean {np.mean(refs):.3f} over {len(refs)} volumes"))
        if helped is not None:
            summary_rows.append(("did SAM help?", helped.sentence()))
    failures = [r for r in rows if r["status"] == "failed"]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>semisam round {round_index} - {_esc(Path(store).name or store)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>semisam round {round_index}</h1>",
        '<table class="summary" id="summary">'
        + "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in summary_rows)
        + "</table>",
    ]
    if failures:
        parts.append("<h2>Failed volumes</h2><ul>" + "".join(
            f"<li><b>{_esc(r['volume'])}</b>: {_esc(r['reason'])}</li>" for r in failures) + "</ul>")
    parts += [
        "<h2>Distributions over finished volumes</h2>",
        '<div class="plots" id="plots">',
        histogram_svg(conf, "mean confidence per volume", CONFIDENCE_COLOUR, "mean confidence"),
        histogram_svg(dice, "student-vs-masker Dice per volume", DICE_COLOUR,
                      "student-vs-masker Dice"),
        "</div>",
    ]
    if series:
        parts += ["<h2>Dice per round</h2>", '<div class="plots" id="rounds">', rounds_svg(series),
                  _rounds_table(series), "</div>"]
    parts += ['<h2>Volumes</h2><p class="muted">Click a column header to sort.</p>',
              _table(rows, stages, with_reference), _suggest_section(root, round_index)]
    if montages:
        plural = "s" if len(montages) != 1 else ""
        parts.append(f"<h2>The {len(montages)} volume{plural} most in need of review</h2>"
                     + _montage_legend(classes))
        for m in montages:
            caption = (f"#{m['rank']} {m['volume']}: review score {m['score']:.3f}, foreground "
                       f"confidence {m['fg_confidence']:.3f}, student-vs-masker Dice "
                       f"{_num(m['dice'])} - image | student | pseudo-label | confidence")
            parts.append(f'<figure><img class="montage" alt="{_esc(caption)}" '
                         f'src="data:image/png;base64,{m["png"]}"><figcaption>{_esc(caption)}'
                         "</figcaption></figure>")
    parts += [f'<p class="muted">written by semisam report in {time.perf_counter() - started:.1f} s'
              "</p>", f"<script>{_JS}</script>", "</body></html>"]
    return "\n".join(parts)


_SWATCH = ("display:inline-block;width:12px;height:10px;margin:0 3px 0 6px;"
           "vertical-align:middle;border:1px solid #333;")


def _montage_legend(classes: ClassMap) -> str:
    """The line above the montages: what each panel shows and, for a multi-class store, each
    structure's name on a swatch of its overlay colour (`inspect.class_colours`)."""
    if not classes.multiclass:
        return ('<p class="legend">Panels: image | student (p &gt; 0.5, blue) | pseudo-label '
                '(red) | confidence: 0 <span class="bar"></span> 1</p>')
    from .inspect import class_colours

    swatches = " ".join(
        f'<span class="swatch" style="{_SWATCH}background:rgb{colour}"></span>'
        f"{_esc(classes.name(v))}"
        for v, colour in class_colours(classes).items())
    return ('<p class="legend" id="class-legend">Panels: image | student (argmax) | '
            f'pseudo-label, each structure in its colour: {swatches} | '
            'confidence: 0 <span class="bar"></span> 1</p>')


def _rounds_table(series: dict[str, dict[int, float]]) -> str:
    rounds = sorted({r for s in series.values() for r in s})
    head = "<th>round</th>" + "".join(f"<th>{_esc(n)}</th>" for n in series)
    body = "".join("<tr><td>" + str(r) + "</td>" + "".join(
        f"<td>{_num(s.get(r))}</td>" for s in series.values()) + "</tr>" for r in rounds)
    return (f'<table class="vol" id="round-dice"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def write_report(store: str | Path, out: Path, round_index: int | None = None, *,
                 worst: int = 6, loop_state: Path | None = None,
                 student_panels: bool = True) -> Path:
    """`build_report` written to ``out`` (parents created); returns the path."""
    page = build_report(store, round_index, worst=worst, loop_state=loop_state,
                        student_panels=student_panels)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
