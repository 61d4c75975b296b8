"""The HTML page of `semisam report`: inline CSS, the table-sorting script, inline SVG plots and
the page assembled from `report_data.ReportData` (no network needed to view it)."""

from __future__ import annotations

import html
import math
import time
from pathlib import Path

import numpy as np

from semisam.schemas import ClassMap

from .report_data import ReportData

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


def _suggest_section(picks: list) -> str:
    """The volumes `semisam suggest` would have labeled next, with the terms of their score
    ('' when no volume finished)."""
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


def _head(data: ReportData) -> list[str]:
    """From the doctype to the summary table and the failed volumes."""
    r, store = data.meta.round, data.store
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>semisam round {r} - {_esc(Path(store).name or store)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>semisam round {r}</h1>",
        '<table class="summary" id="summary">'
        + "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in data.summary)
        + "</table>",
    ]
    failures = [row for row in data.rows if row["status"] == "failed"]
    if failures:
        parts.append("<h2>Failed volumes</h2><ul>" + "".join(
            f"<li><b>{_esc(f['volume'])}</b>: {_esc(f['reason'])}</li>" for f in failures) + "</ul>")
    return parts


def _montage_section(data: ReportData) -> list[str]:
    """The review montages with their legend and captions ([] without montages)."""
    if not data.montages:
        return []
    plural = "s" if len(data.montages) != 1 else ""
    parts = [f"<h2>The {len(data.montages)} volume{plural} most in need of review</h2>"
             + _montage_legend(data.classes)]
    for m in data.montages:
        caption = (f"#{m['rank']} {m['volume']}: review score {m['score']:.3f}, foreground "
                   f"confidence {m['fg_confidence']:.3f}, student-vs-masker Dice "
                   f"{_num(m['dice'])} - image | student | pseudo-label | confidence")
        parts.append(f'<figure><img class="montage" alt="{_esc(caption)}" '
                     f'src="data:image/png;base64,{m["png"]}"><figcaption>{_esc(caption)}'
                     "</figcaption></figure>")
    return parts


def render_page(data: ReportData, started: float) -> str:
    """The page as one string; ``started``: `time.perf_counter()` when the report began (the
    footer names the seconds it took)."""
    parts = _head(data) + [
        "<h2>Distributions over finished volumes</h2>",
        '<div class="plots" id="plots">',
        histogram_svg(data.done_values("mean_confidence"), "mean confidence per volume",
                      CONFIDENCE_COLOUR, "mean confidence"),
        histogram_svg(data.done_values("student_masker_dice"), "student-vs-masker Dice per volume",
                      DICE_COLOUR, "student-vs-masker Dice"),
        "</div>",
    ]
    if data.series:
        parts += ["<h2>Dice per round</h2>", '<div class="plots" id="rounds">',
                  rounds_svg(data.series), _rounds_table(data.series), "</div>"]
    parts += ['<h2>Volumes</h2><p class="muted">Click a column header to sort.</p>',
              _table(data.rows, data.stages, data.with_reference), _suggest_section(data.picks)]
    parts += _montage_section(data)
    parts += [f'<p class="muted">written by semisam report in {time.perf_counter() - started:.1f} s'
              "</p>", f"<script>{_JS}</script>", "</body></html>"]
    return "\n".join(parts)
