"""Which prompts make LiteMedSAM's masks better than the student's own? Measured per recipe.

On a store whose unlabeled volumes carry references (``semisam ingest`` of LA or hippocampus),
for one or more students, per volume:

1. the student's probability map (sliding window) and the LiteMedSAM image embeddings of every
   slice any recipe may prompt (the student's slices along the slice axis, the reference's for
   the diagnostic row) are computed once and cached in ``WORKDIR/cache`` (the encoder is the
   cost; every recipe after that runs only the prompt encoder and mask decoder);
2. every recipe turns the student's map into prompts, decodes, fuses and is scored against the
   reference: Dice and 95HD (voxels), the student's own mask for comparison.

The reference is read only to score, and by the row ``gt-box`` (boxes from the reference: a
diagnostic of what LiteMedSAM can do with perfect boxes, never a product path).

    .venv/bin/python benchmarks/litemedsam_prompts.py STORE --student s4=student4.pt \\
        --student s2=student2.pt --workdir bench-out/la-prompts

Prints one table per student and writes ``WORKDIR/results.json`` (rerunning reuses the cache).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch

from semisam.schemas import (
    FusionConfig,
    FusionMode,
    IntensityConfig,
    LiteMedSamConfig,
    PromptConfig,
    StudentInferenceConfig,
)
from semisam.store import list_metas, open_store, read_image, read_reference, sha256_file
from semisam.training.metrics import dice, hd95, largest_component
from semisam.workers.fusion import confidence_from_uint8, fuse
from semisam.workers.intensity import window_volume
from semisam.workers.localization import foreground_mask, slice_prompts
from semisam.workers.maskers import MaskerSession, SlicePrompt
from semisam.workers.maskers.litemedsam import LiteMedSamMasker
from semisam.workers.propagation import (
    choose_start,
    choose_starts,
    mask_box,
    propagate,
    propagate_chains,
)
from semisam.workers.student import load_student, predict_probability

log = logging.getLogger("benchmarks.litemedsam_prompts")
AXIS = 2


@dataclass
class Case:
    """One volume for one student: everything a recipe may read."""

    volume_id: str
    windowed: np.ndarray  # XxYxZ uint8
    reference: np.ndarray  # XxYxZ bool (scoring and the gt-box row only)
    prob: np.ndarray  # XxYxZ float32 student probability
    embeddings: dict[int, np.ndarray]  # slice index -> 256x64x64 float16


class Decoder:
    """LiteMedSAM's prompt encoder + mask decoder on cached embeddings."""

    def __init__(self, masker: LiteMedSamMasker) -> None:
        self.masker = masker

    def __call__(self, case: Case, prompts: list[SlicePrompt]) -> tuple[np.ndarray, np.ndarray]:
        """``NxHxW`` probabilities and ``N`` predicted IoUs of the prompted slices."""
        hw = tuple(np.moveaxis(case.windowed, AXIS, 0).shape[1:])
        if not prompts:
            return np.zeros((0, *hw), np.float32), np.zeros(0, np.float32)
        emb = torch.from_numpy(np.stack([case.embeddings[p.index] for p in prompts])).float()
        with torch.inference_mode():
            probs, iou = self.masker.decode(emb, prompts, hw)
        return probs.numpy(), iou.float().numpy()


def prepare(root, volume_id: str, students: dict, masker: LiteMedSamMasker, cache: Path
            ) -> dict[str, Case]:
    """Student maps and embeddings of one volume (cached), one `Case` per student.

    ``students``: name -> (model, spec, checkpoint sha256); a student's map is cached under its
    checkpoint's sha256, so a retrained student under the same name is never read stale."""
    cache.mkdir(parents=True, exist_ok=True)
    file = cache / f"{volume_id}.npz"
    image = read_image(root, volume_id)
    reference = read_reference(root, volume_id) > 0
    data = dict(np.load(file)) if file.is_file() else {}
    changed = not data
    data.setdefault("windowed", window_volume(image, IntensityConfig()))
    key = {name: f"prob_{sha[:16]}" for name, (_, _, sha) in students.items()}
    for name, (model, spec, _) in students.items():
        if key[name] not in data:
            data[key[name]] = predict_probability(
                model, image, spec, StudentInferenceConfig(), torch.device("cpu")).astype(np.float16)
            changed = True
    needed: set[int] = set(np.flatnonzero(reference.any(axis=(0, 1))).tolist())
    for name in students:
        mask = foreground_mask(data[key[name]].astype(np.float32), PromptConfig())
        zs = np.flatnonzero(mask.any(axis=(0, 1)))
        if zs.size:
            needed |= set(range(max(0, zs[0] - 3), min(mask.shape[2], zs[-1] + 4)))
    have = set(data["emb_index"].tolist()) if "emb_index" in data else set()
    todo = sorted(needed - have)
    if todo:
        slices = np.moveaxis(data["windowed"], AXIS, 0)[todo]
        emb = []
        with torch.inference_mode():
            for start in range(0, len(todo), 8):
                emb.append(masker.encode(slices[start:start + 8]).numpy().astype(np.float16))
        old_i = data.get("emb_index", np.zeros(0, np.int64))
        old_e = data.get("emb", np.zeros((0, 256, 64, 64), np.float16))
        data["emb_index"] = np.concatenate([old_i, np.asarray(todo, np.int64)])
        data["emb"] = np.concatenate([old_e, *emb])
        changed = True
    if changed:
        np.savez(file, **data)
    embeddings = {int(i): e for i, e in zip(data["emb_index"], data["emb"])}
    return {name: Case(volume_id, data["windowed"], reference,
                       data[key[name]].astype(np.float32), embeddings) for name in students}


# ---- prompt builders --------------------------------------------------------------------------

def student_prompts(case: Case, margin: int = 5, threshold: float = 0.5,
                    min_area_frac: float = 0.0) -> list[SlicePrompt]:
    cfg = PromptConfig(slice_axis=AXIS, box_margin=margin, positive_points=0, threshold=threshold)
    mask = foreground_mask(case.prob, cfg)
    prompts = slice_prompts(mask, case.prob, cfg)
    if min_area_frac > 0 and prompts:
        area = mask.sum(axis=(0, 1))
        keep = area >= min_area_frac * area.max()
        prompts = [p for p in prompts if keep[p.index]]
    return prompts


def student_slices(case: Case, prompts: list[SlicePrompt]) -> np.ndarray:
    return np.moveaxis(case.prob, AXIS, 0)[[p.index for p in prompts]]


# ---- recipes: case -> (masker probabilities of prompted slices, their indices, scores) ---------

Recipe = Callable[[Case, Decoder], tuple[np.ndarray, list[int], np.ndarray]]


def r_box(margin: int = 5, threshold: float = 0.5, min_area_frac: float = 0.0) -> Recipe:
    def run(case, dec):
        prompts = student_prompts(case, margin, threshold, min_area_frac)
        probs, iou = dec(case, prompts)
        return probs, [p.index for p in prompts], iou
    return run


def r_gt_box(margin: int = 5) -> Recipe:
    def run(case, dec):
        ref = case.reference.astype(np.float32)
        cfg = PromptConfig(slice_axis=AXIS, box_margin=margin, positive_points=0,
                           largest_component=False, min_slice_pixels=1)
        prompts = slice_prompts(case.reference, ref, cfg)
        probs, iou = dec(case, prompts)
        return probs, [p.index for p in prompts], iou
    return run


def r_refine(rounds: int = 1, margin: int = 5, reprompt_margin: int = 3) -> Recipe:
    """Box from the student, then the box of LiteMedSAM's own mask (grown by a margin)."""
    def run(case, dec):
        prompts = student_prompts(case, margin)
        probs, iou = dec(case, prompts)
        for _ in range(rounds):
            new = []
            for p, pr in zip(prompts, probs):
                box = mask_box(pr > 0.5, reprompt_margin)
                new.append(SlicePrompt(p.index, p.box if box is None else box))
            prompts = new
            probs, iou = dec(case, prompts)
        return probs, [p.index for p in prompts], iou
    return run


def r_jitter(shifts: tuple[int, ...] = (-3, 0, 3), margin: int = 5) -> Recipe:
    """Mean over boxes whose margin is grown/shrunk by each shift."""
    def run(case, dec):
        prompts = student_prompts(case, margin)
        hw = np.moveaxis(case.windowed, AXIS, 0).shape[1:]
        total = np.zeros((len(prompts), *hw), np.float32)
        ious = np.zeros(len(prompts), np.float32)
        for s in shifts:
            grown = [SlicePrompt(p.index, np.clip(p.box + np.array([-s, -s, s, s], np.float32),
                                                  0, [hw[1] - 1, hw[0] - 1, hw[1] - 1, hw[0] - 1]))
                     for p in prompts]
            probs, iou = dec(case, grown)
            total += probs
            ious += iou
        return total / len(shifts), [p.index for p in prompts], ious / len(shifts)
    return run


def r_smooth_z(window: int = 5, margin: int = 5) -> Recipe:
    """Box coordinates median-filtered along the slice axis (consistent boxes)."""
    from scipy.ndimage import median_filter

    def run(case, dec):
        prompts = student_prompts(case, margin)
        if len(prompts) >= window:
            boxes = median_filter(np.stack([p.box for p in prompts]), size=(window, 1),
                                  mode="nearest")
            prompts = [SlicePrompt(p.index, b) for p, b in zip(prompts, boxes)]
        probs, iou = dec(case, prompts)
        return probs, [p.index for p in prompts], iou
    return run


def r_mask_prompt(margin: int = 5) -> Recipe:
    def run(case, dec):
        cfg = PromptConfig(slice_axis=AXIS, box_margin=margin, positive_points=0, mask_prompt=True)
        prompts = slice_prompts(foreground_mask(case.prob, cfg), case.prob, cfg)
        probs, iou = dec(case, prompts)
        return probs, [p.index for p in prompts], iou
    return run


class CachedSession(MaskerSession):
    """`MaskerSession` over the cached embeddings of a case's prompted slices."""

    def __init__(self, case: Case, dec: Decoder, prompts: list[SlicePrompt]) -> None:
        self.case, self.dec, self.prompts = case, dec, prompts

    def mask(self, positions, prompts):
        return self.dec(self.case, [SlicePrompt(self.prompts[i].index, p.box)
                                    for i, p in zip(positions, prompts)])


def r_propagate(margin: int = 5, step_margin: int = 3, within: bool = False,
                agree_start: bool = False, min_agreement: float = 0.0) -> Recipe:
    """The product's `propagate` (PromptConfig.propagate): the student's box on its largest
    slice, then the box of LiteMedSAM's previous mask, within the student's slices."""
    def run(case, dec):
        prompts = student_prompts(case, margin)
        if not prompts:
            return r_box(margin)(case, dec)
        mask = foreground_mask(case.prob, PromptConfig())
        areas = mask.sum(axis=(0, 1))[[p.index for p in prompts]]
        session = CachedSession(case, dec, prompts)
        student = np.moveaxis(mask, AXIS, 0)[[p.index for p in prompts]]
        start = choose_start(session, prompts, student) if agree_start else None
        positions, probs, iou = propagate(session, prompts, areas, step_margin,
                                          within_student=within, start=start, student=student,
                                          min_agreement=min_agreement)
        return probs, [prompts[i].index for i in positions], iou
    return run


def r_chains(count: int = 3, spacing: int = 10, margin: int = 5, step_margin: int = 3) -> Recipe:
    """Several propagation chains (within the student's boxes) from the ``count`` best-agreeing
    starts ``spacing`` slices apart; per slice the mean of the chains' probabilities, a chain
    that did not reach the slice counting 0 (a soft vote)."""
    def run(case, dec):
        prompts = student_prompts(case, margin)
        if not prompts:
            return r_box(margin)(case, dec)
        mask = foreground_mask(case.prob, PromptConfig())
        session = CachedSession(case, dec, prompts)
        student = np.moveaxis(mask, AXIS, 0)[[p.index for p in prompts]]
        areas = student.reshape(len(student), -1).sum(axis=1)
        starts = choose_starts(session, prompts, student, count, spacing)
        positions, probs, iou = propagate_chains(session, prompts, areas, step_margin, starts)
        return probs, [prompts[k].index for k in positions], iou
    return run


def r_gt_start(margin: int = 5, step_margin: int = 3, within: bool = True) -> Recipe:
    """Diagnostic (reads labels): propagation as the default's, started on the prompted slice
    where the reference is largest with the reference's box there; ``within`` clips later boxes
    to the student's. How much of the gap is the start, how much the chain."""
    def run(case, dec):
        prompts = student_prompts(case, margin)
        ref = np.moveaxis(case.reference, AXIS, 0)
        ref_areas = np.array([ref[p.index].sum() for p in prompts])
        if not prompts or not ref_areas.any():
            return r_box(margin)(case, dec)
        start = int(np.argmax(ref_areas))
        prompts[start] = SlicePrompt(prompts[start].index, mask_box(ref[prompts[start].index], margin))
        session = CachedSession(case, dec, prompts)
        areas = np.ones(len(prompts))
        positions, probs, iou = propagate(session, prompts, areas, step_margin,
                                          within_student=within, start=start)
        return probs, [prompts[i].index for i in positions], iou
    return run


# ---- fusion -----------------------------------------------------------------------------------

def fused_label(case: Case, probs: np.ndarray, idx: list[int], iou: np.ndarray, mode: str,
                gate: float = 0.0, weight: float = 0.5, guard: float = 0.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-label (bool) and confidence (float in [0, 1]) of one recipe's masker output.

    Modes: ``masker`` (masker on prompted slices, student elsewhere), ``average`` (weighted
    mean on prompted slices), ``gate`` (masker where its predicted IoU >= gate, else student),
    ``gate-avg`` (average where IoU >= gate, else student), ``iou-avg`` (average with the
    masker's weight = weight * its predicted IoU), ``masker-only`` (zero off prompted slices).
    """
    if mode == "masker-only":
        label = np.zeros(case.prob.shape, bool)
        conf = np.ones(case.prob.shape, np.float32)
        np.moveaxis(label, AXIS, 0)[idx] = probs > 0.5
        np.moveaxis(conf, AXIS, 0)[idx] = np.abs(2 * probs - 1)
        return label, conf
    keep = np.ones(len(idx), bool) if mode not in ("gate", "gate-avg") else iou >= gate
    idx_k = [i for i, k in zip(idx, keep) if k]
    probs_k = probs[keep]
    if mode in ("masker", "gate"):
        cfg = FusionConfig(mode=FusionMode.masker_on_prompted)
    elif mode == "iou-avg":
        ps = np.moveaxis(case.prob, AXIS, 0)[idx_k]
        w = (weight * iou[keep]).reshape(-1, 1, 1)
        probs_k = w * probs_k + (1 - w) * ps
        cfg = FusionConfig(mode=FusionMode.average, masker_weight=1.0)
    else:
        cfg = FusionConfig(mode=FusionMode.average, masker_weight=weight)
    if guard:  # the product's fallback (the guard reads the largest component, so fuse keeps it)
        cfg = cfg.model_copy(update={"min_student_agreement": guard, "largest_component": True})
    result = fuse(case.prob, probs_k, idx_k, cfg, AXIS)
    return result.pseudo_label > 0, confidence_from_uint8(result.confidence)


def calibration(label: np.ndarray, conf: np.ndarray, ref: np.ndarray, bins: int = 10,
                pad: int = 10) -> dict:
    """Does the confidence predict where the pseudo-label is right? Over the region of interest
    (the bounding box of reference and pseudo-label, grown by ``pad`` voxels): per confidence
    bin the share of correct voxels; ECE of ``(1 + c) / 2`` read as P(correct); AUROC of c for
    correct vs wrong voxels."""
    union = label | ref
    if not union.any():
        return {}
    box = tuple(slice(max(int(np.flatnonzero(union.any(axis=tuple(a for a in range(3) if a != d)))[0]) - pad, 0),
                      int(np.flatnonzero(union.any(axis=tuple(a for a in range(3) if a != d)))[-1]) + pad + 1)
                for d in range(3))
    c, right = conf[box].ravel(), (label[box] == ref[box]).ravel()
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(c, edges) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    acc = np.bincount(which, weights=right, minlength=bins) / np.maximum(counts, 1)
    mean_p = np.bincount(which, weights=(1 + c) / 2, minlength=bins) / np.maximum(counts, 1)
    ece = float(np.sum(counts / c.size * np.abs(acc - mean_p)))
    order = np.argsort(c, kind="stable")
    ranks = np.empty(c.size)
    ranks[order] = np.arange(1, c.size + 1)
    n_pos, n_neg = int(right.sum()), int((~right).sum())
    auc = float((ranks[right].sum() - n_pos * (n_pos + 1) / 2) / max(n_pos * n_neg, 1))
    return {"ece": ece, "auroc": auc, "counts": counts.tolist(), "accuracy": acc.round(4).tolist()}


_SHARED: dict[tuple, Recipe] = {}


def shared(maker: Callable[..., Recipe], *args, **kwargs) -> Recipe:
    """One recipe object per (maker, arguments): recipes that differ only in fusion share it,
    and the main loop runs it (its decoding) once per case."""
    key = (maker.__name__, args, tuple(sorted(kwargs.items())))
    return _SHARED.setdefault(key, maker(*args, **kwargs))


RECIPES: dict[str, tuple[Recipe, str, dict]] = {
    # name: (prompt recipe, fusion mode, fusion options)
    "box5": (shared(r_box, 5), "masker", {}),
    "box5-masker-only": (shared(r_box, 5), "masker-only", {}),
    "box0": (shared(r_box, 0), "masker", {}),
    "box10": (shared(r_box, 10), "masker", {}),
    "box5-t0.7": (shared(r_box, 5, threshold=0.7), "masker", {}),
    "box5-trim0.25": (shared(r_box, 5, min_area_frac=0.25), "masker", {}),
    "box5-avg": (shared(r_box, 5), "average", {}),
    "box5-avg-w0.7": (shared(r_box, 5), "average", {"weight": 0.7}),
    "box5-gate0.8": (shared(r_box, 5), "gate", {"gate": 0.8}),
    "box5-gate0.9": (shared(r_box, 5), "gate", {"gate": 0.9}),
    "box5-gateavg0.8": (shared(r_box, 5), "gate-avg", {"gate": 0.8}),
    "box5-iouavg": (shared(r_box, 5), "iou-avg", {"weight": 1.0}),
    "refine1": (shared(r_refine, 1), "masker", {}),
    "refine1-avg": (shared(r_refine, 1), "average", {}),
    "jitter3": (shared(r_jitter), "masker", {}),
    "jitter3-avg": (shared(r_jitter), "average", {}),
    "smoothz5": (shared(r_smooth_z, 5), "masker", {}),
    "smoothz5-avg": (shared(r_smooth_z, 5), "average", {}),
    "maskprompt": (shared(r_mask_prompt, 5), "masker", {}),
    "propagate": (shared(r_propagate), "masker", {}),
    "propagate-avg": (shared(r_propagate), "average", {}),
    "propagate-lcc": (shared(r_propagate), "masker", {"lcc": True}),
    "propagate-avg-lcc": (shared(r_propagate), "average", {"lcc": True}),
    "student-lcc": (None, "student", {"lcc": True}),
    "propagate-within": (shared(r_propagate, within=True), "masker", {}),
    "prop-agree-avg": (shared(r_propagate, within=True, agree_start=True), "average", {}),
    "prop-agree-avg-lcc": (shared(r_propagate, within=True, agree_start=True), "average", {"lcc": True}),
    "prop-agree-avg-lcc-guard0.4": (shared(r_propagate, within=True, agree_start=True), "average",
                                    {"guard": 0.4}),  # the guard has fuse keep the largest component
    "prop-agree-stop-avg-lcc": (shared(r_propagate, within=True, agree_start=True, min_agreement=0.3),
                                "average", {"lcc": True}),
    "propagate-within-avg": (shared(r_propagate, within=True), "average", {}),
    "propagate-within-avg-lcc": (shared(r_propagate, within=True), "average", {"lcc": True}),
    "chains3-avg-guard0.4": (shared(r_chains, 3), "average", {"guard": 0.4}),
    "gt-start-avg-guard0.4 (diagnostic: reads labels)": (shared(r_gt_start), "average", {"guard": 0.4}),
    "gt-start-free-avg-guard0.4 (diagnostic: reads labels)": (shared(r_gt_start, within=False),
                                                             "average", {"guard": 0.4}),
    "gt-box (diagnostic: reads labels)": (shared(r_gt_box, 5), "masker-only", {}),
}


def score(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    return {"dice": dice(pred, ref), "hd95": hd95(pred, ref) if pred.any() else float("nan")}


def previous_rows(path: Path, checkpoints: dict[str, str]) -> dict[tuple[str, str, str], dict]:
    """(student, recipe, volume) -> row of an earlier run's results.json (``--resume``), for the
    students whose checkpoint sha256 (``checkpoints``: name -> sha256) is the one recorded there:
    rows measured with another checkpoint under the same name are measured again."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    recorded = {name: info["sha256"] for name, info in old.get("students", {}).items()}
    keep = {s for s in old["rows"] if recorded.get(s) == checkpoints.get(s)}
    for s in sorted(set(old["rows"]) - keep):
        log.warning("results.json: rows of student %s not kept (its checkpoint is not the one "
                    "they were measured with, or was not recorded)", s)
    return {(s, r, row["volume"]): row for s, table in old["rows"].items() if s in keep
            for r, vals in table.items() for row in vals}


def write_results(args: argparse.Namespace, ids: list[str], rows: dict, show: bool = False) -> None:
    """``WORKDIR/results.json`` (after every volume: a stopped run keeps what it measured) and,
    with ``show``, one table per student."""
    result = {"date": date.today().isoformat(), "command": " ".join(sys.argv),
              "store": str(args.store), "students": args.checkpoints, "volumes": ids, "rows": rows}
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "results.json").write_text(json.dumps(result, indent=1))
    if not show:
        return
    for sname, table in rows.items():
        print(f"\n{sname}: {len(ids)} volumes; Dice / 95HD (voxels) mean over volumes; ECE and "
              "AUROC of the confidence for right/wrong voxels near the structure")
        print(summary_table(table))


def summary_table(table: dict[str, list[dict]]) -> str:
    """Markdown rows: recipe, Dice, 95HD, volumes where it beats the student, ECE, AUROC."""
    base = np.array([r["dice"] for r in table["student"]])
    lines = ["| recipe | Dice | 95HD | beats student | ECE | AUROC | decode s/vol |",
             "|---|---|---|---|---|---|---|"]
    for rname, vals in table.items():
        d = np.array([r["dice"] for r in vals])
        h = np.nanmean([r["hd95"] for r in vals])
        wins = f"{int((d > base).sum())}/{len(d)}" if rname != "student" else "-"
        sec = np.mean([r.get("decode_s", 0) for r in vals])
        cal = [r["calibration"] for r in vals if r.get("calibration")]
        ece = np.mean([c["ece"] for c in cal]) if cal else np.nan
        auc = np.mean([c["auroc"] for c in cal]) if cal else np.nan
        lines.append(f"| {rname} | {d.mean():.4f} | {h:.2f} | {wins} | {ece:.3f} | {auc:.3f} "
                     f"| {sec:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--student", action="append", required=True, help="NAME=checkpoint.pt")
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/litemedsam-prompts"))
    parser.add_argument("--volumes", type=int, default=None, help="first N unlabeled volumes")
    parser.add_argument("--recipes", nargs="*", default=None, help="subset of recipe names")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--cache", type=Path, default=None, help="default: WORKDIR/cache")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows of WORKDIR/results.json and measure only the rest")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    students = {}
    args.checkpoints = {}
    for item in args.student:
        name, _, path = item.partition("=")
        model, spec, _ = load_student(Path(path), "cpu")
        args.checkpoints[name] = {"checkpoint": path, "sha256": sha256_file(path)}
        students[name] = (model, spec, args.checkpoints[name]["sha256"])
    masker = LiteMedSamMasker(LiteMedSamConfig(dtype=args.dtype), "cpu")
    decoder = Decoder(masker)
    root = open_store(args.store, read_only=True)
    ids = [m.volume_id for m in list_metas(root) if not m.labeled][: args.volumes]
    recipes = {k: v for k, v in RECIPES.items() if not args.recipes or k in args.recipes}
    rows: dict[str, dict[str, list[dict]]] = {s: {"student": [], **{r: [] for r in recipes}}
                                              for s in students}
    done = (previous_rows(args.workdir / "results.json",
                          {n: c["sha256"] for n, c in args.checkpoints.items()})
            if args.resume else {})
    t0 = time.perf_counter()
    for n, vid in enumerate(ids, 1):
        if all(done.get((s, r, vid)) for s in students for r in ["student", *recipes]):
            for s in students:
                for r in ["student", *recipes]:
                    rows[s][r].append(done[(s, r, vid)])
            log.info("%d/%d %s (kept from results.json)", n, len(ids), vid)
            continue  # nothing new: the volume is not even read
        cases = prepare(root, vid, students, masker, args.cache or args.workdir / "cache")
        for sname, case in cases.items():
            outputs: dict[int, tuple] = {}  # recipe object -> (output, seconds): decoded once
            own = case.prob > 0.5
            rows[sname]["student"].append({"volume": vid, **score(own, case.reference),
                                           "calibration": calibration(own, np.abs(2 * case.prob - 1),
                                                                      case.reference)})
            for rname, (recipe, mode, opts) in recipes.items():
                if (sname, rname, vid) in done:
                    rows[sname][rname].append(done[(sname, rname, vid)])
                    continue
                opts = dict(opts)
                lcc = opts.pop("lcc", False)
                decode_s = 0.0
                if recipe is None:  # the student alone
                    t = time.perf_counter()
                    label, conf = case.prob > 0.5, np.abs(2 * case.prob - 1)
                    idx = []
                else:
                    if id(recipe) not in outputs:
                        t = time.perf_counter()
                        outputs[id(recipe)] = (recipe(case, decoder), time.perf_counter() - t)
                    (probs, idx, iou), decode_s = outputs[id(recipe)]  # counted for every user
                    t = time.perf_counter()
                    label, conf = fused_label(case, probs, idx, iou, mode, **opts)
                if lcc:
                    label = largest_component(label)
                rows[sname][rname].append({"volume": vid, **score(label, case.reference),
                                           "calibration": calibration(label, conf, case.reference),
                                           "slices": len(idx),
                                           "decode_s": round(decode_s + time.perf_counter() - t, 2)})
        log.info("%d/%d %s (%.0f s)", n, len(ids), vid, time.perf_counter() - t0)
        write_results(args, ids[:n], rows)
    write_results(args, ids, rows, show=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
