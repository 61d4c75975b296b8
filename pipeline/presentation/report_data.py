"""What `semisam report` shows, read from the store: one row per volume, Dice against the
ground truth (``reference``), each round's mean, the loop table, the review montages, the
"label next" picks and the summary lines. The page itself is `pipeline.presentation.report_html`'s."""

from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from semisam.schemas import ClassMap, RoundMeta, VolumeWork, volume_work
from semisam.store import list_metas, list_rounds, read_class_map, read_output, read_record
from semisam.training.metrics import class_dice

log = logging.getLogger(__name__)


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
                           student_masker_dice=s.student_masker_dice)
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
                    "fg_confidence": item.fg_confidence, "dice": item.student_masker_dice,
                    "png": base64.b64encode(buf.getvalue()).decode("ascii")})
    return out



def _add_gains(root: zarr.Group, round_index: int, rows: list[dict]):
    """Each row's student Dice vs reference and gain (`gain.volume_gains`); their summary."""
    from ..gain import summarize_gains, volume_gains

    gains = volume_gains(root, round_index)
    for r in rows:
        g = gains.get(r["volume"])
        if g is not None:
            r["student_reference_dice"], r["gain"] = g.student_dice, g.gain
    return summarize_gains(gains)



def dice_series(root: zarr.Group, store: str, loop_state: Path | None) -> dict[str, dict[int, float]]:
    """The "Dice per round" lines: each round's mean pseudo-label Dice against the reference
    and each student's held-out Dice from the loop table (either left out when absent)."""
    series: dict[str, dict[int, float]] = {}
    ref_dice = round_reference_dice(root)
    if ref_dice:
        series["pseudo-labels vs reference"] = ref_dice
    loop = loop_rows(store, loop_state)
    student_dice = {int(r["round"]): float(r["dice"]) for r in loop if r.get("dice") is not None}
    if student_dice:
        series["student (held-out)"] = student_dice
    return series


def summary_lines(store: str, meta: RoundMeta, rounds: list[int], rows: list[dict],
                  classes: ClassMap, helped) -> list[tuple[str, str]]:
    """The round summary table: (name, value) lines; ``helped`` is `summarize_gains`'s
    result or None."""
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "pending")}
    per_node: dict[str, int] = {}
    for r in rows:
        if r["status"] == "done":
            per_node[r["node"] or "?"] = per_node.get(r["node"] or "?", 0) + 1
    dice = [r["student_masker_dice"] for r in rows
            if r["status"] == "done" and r["student_masker_dice"] is not None]
    cfg = meta.config
    masker = cfg.get("masker", {}).get("kind", "?")
    lines = [
        ("store", store), ("round", f"{meta.round} of rounds {rounds}"),
        ("status", meta.status.value), ("fingerprint", meta.fingerprint[:16]),
        ("volumes", f"{len(rows)} unlabeled: {counts['done']} done, {counts['failed']} failed, "
                    f"{counts['pending']} pending"),
        ("masker", masker + (f" ({meta.masker_checkpoint})" if meta.masker_checkpoint else "")),
        ("fusion", cfg.get("fusion", {}).get("mode", "?")),
        ("slice axis", cfg.get("prompts", {}).get("slice_axis", "?")),
        ("student", f"{meta.student_checkpoint} (sha256 {meta.student_sha256[:12]})"),
        ("started / finished", f"{meta.created_at} / {meta.finished_at or '-'}"),
        ("volume time", f"{sum(r['seconds'] or 0 for r in rows):.1f} s over all volumes"),
        ("per node", ", ".join(f"{n}: {c}" for n, c in sorted(per_node.items())) or "-"),
    ]
    if dice:
        lines.append(("student-vs-masker Dice", f"mean {np.mean(dice):.3f}, min {np.min(dice):.3f}"))
    if classes.multiclass:
        lines.insert(2, ("classes", ", ".join(f"{v}={n}" for v, n in classes.names.items())))
    refs = [r["reference_dice"] for r in rows if r["reference_dice"] is not None]
    if refs:
        per_class = " (per class, mean over the classes)" if classes.multiclass else ""
        lines.append((f"pseudo-label Dice vs reference{per_class}",
                      f"mean {np.mean(refs):.3f} over {len(refs)} volumes"))
        if helped is not None:
            lines.append(("did the masker help?", helped.sentence()))
    return lines


@dataclass
class ReportData:
    """Everything the page of one round shows (`gather`)."""

    store: str
    meta: RoundMeta
    classes: ClassMap
    rows: list[dict]
    stages: list[str]
    summary: list[tuple[str, str]]
    series: dict[str, dict[int, float]]
    montages: list[dict]
    picks: list
    with_reference: bool

    def done_values(self, key: str) -> list[float]:
        """``key`` over the finished volumes that have it (the histograms' values)."""
        return [r[key] for r in self.rows if r["status"] == "done" and r[key] is not None]


def gather(root: zarr.Group, store: str, meta: RoundMeta, *, worst: int,
           loop_state: Path | None, student_panels: bool) -> ReportData:
    """Read what the page of round ``meta.round`` shows (the round must exist)."""
    from ..suggest import suggest

    round_index = meta.round
    rows, stages = volume_rows(root, round_index)
    with_reference = any(r["reference_dice"] is not None for r in rows)
    helped = _add_gains(root, round_index, rows) if with_reference and student_panels else None
    classes = read_class_map(root)
    return ReportData(
        store=store, meta=meta, classes=classes, rows=rows, stages=stages,
        summary=summary_lines(store, meta, list_rounds(root), rows, classes, helped),
        series=dice_series(root, store, loop_state),
        montages=_montages(root, round_index, worst, student_panels) if worst else [],
        picks=suggest(root, round_index, 5)[1], with_reference=with_reference)
