"""Hippocampus benchmark of the training stage (CPU): does SemiSAM's alternation help?

Binary hippocampus (MSD Task04, label > 0; ``--classes``: its two structures, anterior 1 and
posterior 2, every figure then the mean over the two and per class), a fixed split: 50 held-out volumes (evaluation only),
4 labeled volumes, the other 146 of the training split unlabeled. Settings:

    a          supervised, 4 labels
    b          Mean Teacher, 4 labels + 146 unlabeled (student 0 of the loop)
    c1, c2..   the loop's students 1, 2..: b + pseudo-labels of rounds 1, 2.. (weight-free
               random-walker masker prompted by the previous student), SAM term: confidence-
               weighted CE, weight 1, constant
    c-semisam1 SemiSAM's own SAM term (MSE, weight 0.1, ramp-down) on round 1's pseudo-labels
    c-avg1, .. as c1, c2.., but each round fuses masker and student by averaging their
               probabilities (fusion mode ``average``) instead of taking the masker's mask on
               prompted slices
    c-tta1, .. as c-avg, and the round's student probability is the mean over flips along
               each axis (test-time augmentation, ``student.flip_axes``); the SAM term is CE +
               soft Dice with every voxel weighted 1 (``ce_dice``, not confidence-weighted),
               and each student starts from the previous student's weights (warm start)
    c-mpr1, .. as c-tta, with the masker also run along the two other slice axes and its
               probabilities averaged where the axes overlap (``prompts.extra_axes``)
    d          supervised, all 150 training labels (the ceiling)

Every student is evaluated on the held-out volumes (sliding window, Dice and 95HD in mm, with
and without largest-component post-processing). Results go to ``WORKDIR/results.json``; the
table is printed. Rerunning resumes: finished students and rounds are reused.

    .venv/bin/python benchmarks/hippocampus.py        # one seed: a, b, c-mpr1, d (~25 min here)
    .venv/bin/python benchmarks/hippocampus.py --seeds 0 1 2 --rounds 1 \
        --settings a c c-tta c-mpr d                   # the recorded 3-seed run
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from semisam.pipeline.evaluate import evaluate_student
from semisam.pipeline.ingest import ingest
from semisam.pipeline.loop import Loop, pseudo_label_dice
from semisam.pipeline.rounds.driver import run_round
from semisam.schemas import (
    ClassMap,
    FusionMode,
    LoopConfig,
    LrSchedule,
    MaskerKind,
    OptimizerKind,
    RampSchedule,
    RoundConfig,
    SamLoss,
    SamNormalization,
    StudentSpec,
    TrainConfig,
)
from semisam.store import list_metas, open_store, read_class_map, read_label
from semisam.training import train_student
from semisam.training.augmentation import augmentation_plan

log = logging.getLogger("benchmarks.hippocampus")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hippocampus"
CLASSES = ClassMap(names={1: "anterior", 2: "posterior"})  # MSD Task04's label values
SPEC = StudentSpec(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1,
                   patch_size=(40, 56, 40))


def volume_ids(data: Path) -> list[str]:
    """The ids of ``data/images/*.nii.gz``, sorted."""
    return sorted(p.name.removesuffix(".nii.gz") for p in (data / "images").glob("*.nii.gz"))


def split_ids(ids: list[str], holdout: int, labeled: int, seed: int = 2024) -> dict[str, list[str]]:
    """A fixed split (independent of the training seeds): held-out, labeled, unlabeled ids."""
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    train = order[holdout:]
    return {"heldout": sorted(order[:holdout]), "labeled": sorted(train[:labeled]),
            "unlabeled": sorted(train[labeled:])}


def prepare_stores(data: Path, work: Path, split: dict[str, list[str]],
                   classes: ClassMap | None = None) -> dict[str, Path]:
    """``train.zarr`` (4 labeled + unlabeled with references), ``full.zarr`` (all training
    volumes labeled) and ``heldout.zarr`` (the evaluation volumes, labeled); binary
    (``label > 0``) unless ``classes`` keeps the label values."""
    images, labels = data / "images", data / "labels"
    train_files = [images / f"{i}.nii.gz" for i in split["labeled"] + split["unlabeled"]]
    stores = {"train": work / "train.zarr", "full": work / "full.zarr", "heldout": work / "heldout.zarr"}
    plans = {"train": (train_files, set(split["labeled"])),
             "full": (train_files, None),
             "heldout": ([images / f"{i}.nii.gz" for i in split["heldout"]], None)}
    for name, (files, labeled) in plans.items():
        report = ingest(stores[name], files, labels_dir=labels, labeled=labeled,
                        binarize=classes is None, classes=classes)
        if not report.ok:
            raise SystemExit(f"ingest of {name} failed: {report.failed[0].reason}")
    return stores


AUGMENT = ("class-aware", "semisam", "none")


def base_config(iterations: int, seed: int, augment: str = "class-aware") -> TrainConfig:
    """The small-UNet setting of the benchmark; SemiSAM's ramps rescaled to ``iterations``
    (ramp length 40 units of ``iterations // 40`` instead of 150 iterations of 6000);
    ``augment``: 'class-aware' (the default: SemiSAM's rot90/flips less those that swap the
    structures, `training.augmentation`), 'semisam' (all of them), 'none'."""
    cfg = TrainConfig(student=SPEC, iterations=iterations, seed=seed,
                      checkpoint_every=max(100, iterations // 4), threads=2)
    cfg.augment.rot90 = cfg.augment.flip = augment != "none"
    cfg.augment.class_aware = augment == "class-aware"
    cfg.batch.labeled, cfg.batch.unlabeled = 2, 2
    cfg.optimizer.kind, cfg.optimizer.lr, cfg.optimizer.weight_decay = OptimizerKind.adam, 1e-3, 1e-5
    cfg.optimizer.schedule = LrSchedule.poly
    unit = max(1, iterations // 40)
    cfg.mean_teacher.ramp_unit = cfg.sam.ramp_unit = unit
    return cfg


def configs(iterations: int, seed: int, augment: str = "class-aware") -> dict[str, TrainConfig]:
    """Training config of every setting.

    ``b``/``c``: one loop (student 0 = Mean Teacher; students 1.. add the SAM term, here a
    confidence-weighted CE of weight 1 held constant); ``c-semisam``: SemiSAM's own SAM term
    (MSE, weight 0.1, ramp-down) trained on the same loop's pseudo-labels; ``c-avg``: as ``c``;
    ``c-tta``: CE + soft Dice on the pseudo-labels, every voxel weighted 1, and each student
    starts from the previous one's weights (`run_fused_rounds`).
    """
    sup = base_config(iterations, seed, augment)
    sup.mean_teacher.enabled = sup.sam.enabled = False
    sup.batch.unlabeled = 0
    loop = base_config(iterations, seed, augment)
    loop.sam.loss, loop.sam.weight = SamLoss.ce, 1.0
    loop.sam.schedule, loop.sam.normalization = RampSchedule.constant, SamNormalization.confidence
    tta = loop.model_copy(deep=True)
    tta.sam.loss, tta.sam.confidence_weighted = SamLoss.ce_dice, False
    return {"a": sup, "c": loop, "c-semisam": base_config(iterations, seed, augment), "c-avg": loop,
            "c-tta": tta, "c-mpr": tta, "d": sup}


def round_config(fusion: FusionMode = FusionMode.masker_on_prompted) -> RoundConfig:
    """The weight-free random-walker masker (the round's default, LiteMedSAM, does not help on
    hippocampus: docs/benchmarks.md), 2 Ray workers of 1 thread."""
    cfg = RoundConfig()
    cfg.masker.kind = MaskerKind.random_walker
    cfg.runtime.workers, cfg.runtime.torch_threads = 2, 1
    cfg.fusion.mode = fusion
    return cfg


def evaluate(student: Path, heldout: Path, previous: dict | None = None) -> dict[str, float]:
    """Held-out Dice/95HD with and without largest-component post-processing; ``previous``
    figures are reused when they were measured on this very checkpoint file."""
    stamp = student.stat().st_mtime_ns
    if previous and previous.get("checkpoint_mtime_ns") == stamp and "dice_lcc" in previous:
        return {k: v for k, v in previous.items() if k not in ("seconds", "pseudo_label_dice")}
    out: dict[str, float] = {"checkpoint_mtime_ns": stamp}
    for lcc in (False, True):
        report = evaluate_student(heldout, student, largest_component=lcc, device="cpu")
        suffix = "_lcc" if lcc else ""
        out[f"dice{suffix}"] = report.mean("dice")
        out[f"dice_std{suffix}"] = report.summary["dice"].std
        out[f"hd95_mm{suffix}"] = report.mean("hd95_mm")
        out["n"] = len(report.cases)
        for value, metrics in (report.class_summary or {}).items():  # --classes: per structure
            out[f"dice{suffix}_class{value}"] = metrics["dice"].mean
    return out


def train_one(store: Path, out: Path, cfg: TrainConfig, round_index: int | None = None,
              init: Path | None = None) -> float:
    """Train (or resume) one student, from ``init``'s weights if given; its training seconds,
    earlier interrupted parts included."""
    return train_student(store, out, cfg, round_index=round_index, resume=True, init=init).seconds


def run_seed(seed: int, args: argparse.Namespace, stores: dict[str, Path], results: dict) -> None:
    """Every requested setting for one training seed; finished students are reused."""
    cfgs = configs(args.iterations, seed, args.augment)
    work = args.workdir / f"seed{seed}"
    for name in [s for s in args.settings if s in ("a", "d")]:
        ckpt = work / f"{name}.pt"
        seconds = train_one(stores["train" if name == "a" else "full"], ckpt, cfgs[name])
        results[f"{name}/{seed}"] = {**evaluate(ckpt, stores["heldout"], results.get(f"{name}/{seed}")),
                                     "seconds": seconds}
        log.info("seed %d setting %s: %s", seed, name, results[f"{name}/{seed}"])
    if not {"c", "c-avg", "c-tta", "c-mpr"} & set(args.settings):
        return
    store = work / "loop.zarr"  # rounds are per seed: each loop gets its own copy of the store
    if not store.exists():
        shutil.copytree(stores["train"], store)
    state = Loop(store, LoopConfig(train=cfgs["c"], round=round_config()), work / "loop",
                 eval_store=stores["heldout"]).run(args.rounds if "c" in args.settings else 0)
    for row in state.rows:
        key = f"b/{seed}" if row.round == 0 else f"c{row.round}/{seed}"
        results[key] = {**evaluate(Path(row.student), stores["heldout"], results.get(key)),
                        "pseudo_label_dice": row.pseudo_label_dice, "seconds": row.seconds}
        log.info("seed %d %s: %s", seed, key, results[key])
        for setting in [x for x in ("c-avg", "c-tta", "c-mpr") if row.round == 0 and x in args.settings]:
            run_fused_rounds(setting, Path(row.student), work, stores, cfgs[setting], seed,
                             args.rounds, results)
        if row.round == 1 and "c-semisam" in args.settings:
            ckpt = work / f"c-semisam{row.round}.pt"
            seconds = train_one(store, ckpt, cfgs["c-semisam"], row.round)
            key = f"c-semisam{row.round}/{seed}"
            results[key] = {**evaluate(ckpt, stores["heldout"], results.get(key)),
                            "seconds": seconds}


def fused_round_config(setting: str, flips: tuple[int, ...] = (0, 1, 2)) -> RoundConfig:
    """Round config of settings c-avg (fusion ``average``), c-tta (``average`` with the
    student's flip test-time augmentation along ``flips``) and c-mpr (c-tta with the masker
    run along all three slice axes, `PromptConfig.extra_axes`)."""
    cfg = round_config(FusionMode.average)
    if setting in ("c-tta", "c-mpr"):
        cfg.student.flip_axes = flips
    if setting == "c-mpr":
        cfg.prompts.extra_axes = (0, 1)
    return cfg


def run_fused_rounds(setting: str, student0: Path, work: Path, stores: dict[str, Path],
                     cfg: TrainConfig, seed: int, rounds: int, results: dict) -> None:
    """Settings c-avg1.. / c-tta1..: the loop of c from the same student 0 with the round
    config of `fused_round_config`."""
    store = work / f"{setting}.zarr"
    if not store.exists():
        shutil.copytree(stores["train"], store)
    previous = student0
    for r in range(1, rounds + 1):
        run_round(store, r, previous, fused_round_config(setting, tta_axes(store, cfg)),
                  show_progress=False)
        ckpt = work / f"{setting}{r}.pt"
        seconds = train_one(store, ckpt, cfg, r, init=previous if setting != "c-avg" else None)
        key = f"{setting}{r}/{seed}"
        results[key] = {**evaluate(ckpt, stores["heldout"], results.get(key)), "seconds": seconds,
                        "pseudo_label_dice": pseudo_label_dice(store, r)}
        log.info("seed %d %s%d: %s", seed, setting, r, results[key])
        previous = ckpt


def tta_axes(store: Path, cfg: TrainConfig) -> tuple[int, ...]:
    """The round's flip test-time augmentation for a student trained with ``cfg``: no flips
    for one trained without them, the flips class-aware training kept (a flip the student never
    saw swaps the structures), else every axis."""
    if not cfg.augment.flip:
        return ()
    root = open_store(store, read_only=True)
    classes = read_class_map(root)
    if not (cfg.augment.class_aware and classes.multiclass):
        return (0, 1, 2)
    labels = (read_label(root, m.volume_id) for m in list_metas(root) if m.labeled)
    plan = augmentation_plan(cfg.augment, classes, labels)
    return plan.flip_axes if plan.flip else ()


class SavedResults(dict):
    """``setting/seed -> figures``, rewritten to ``path`` (with ``header``) on every new entry,
    so that an interrupted run keeps what it measured; starts from the file's entries."""

    def __init__(self, path: Path, header: dict) -> None:
        super().__init__(json.loads(path.read_text())["results"] if path.is_file() else {})
        self.path, self.header = path, header

    def __setitem__(self, key: str, value: dict) -> None:
        super().__setitem__(key, value)
        self.path.write_text(json.dumps({**self.header, "results": dict(self)}, indent=2))


def table(results: dict) -> list[str]:
    """Mean +- std over seeds per setting."""
    by_setting: dict[str, list[dict]] = {}
    for key, value in results.items():
        by_setting.setdefault(key.split("/")[0], []).append(value)
    per_class = sorted({k.removeprefix("dice_class") for r in results.values() for k in r
                        if k.startswith("dice_class")})
    lines = ["| setting | seeds | Dice | Dice (LCC) | 95HD mm | pseudo-label Dice | s / seed |"
             + "".join(f" Dice class {v} |" for v in per_class),
             "|---|---|---|---|---|---|---|" + "---|" * len(per_class)]
    for name in sorted(by_setting):
        rows = by_setting[name]

        def stat(key: str, digits: int = 3, rows: list[dict] = rows) -> str:
            vals = [r[key] for r in rows if r.get(key) is not None]
            if not vals:
                return "-"
            return f"{np.mean(vals):.{digits}f} +- {np.std(vals):.{digits}f}" if len(vals) > 1 else f"{vals[0]:.{digits}f}"

        lines.append(f"| {name} | {len(rows)} | {stat('dice')} | {stat('dice_lcc')} | "
                     f"{stat('hd95_mm', 2)} | {stat('pseudo_label_dice')} | {stat('seconds', 0)} |"
                     + "".join(f" {stat('dice_class' + v)} |" for v in per_class))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/hippocampus"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--iterations", type=int, default=1100)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--labeled", type=int, default=4)
    parser.add_argument("--holdout", type=int, default=50)
    parser.add_argument("--classes", action="store_true",
                        help="both structures (1 anterior, 2 posterior) instead of label > 0")
    parser.add_argument("--augment", choices=AUGMENT, default="class-aware",
                        help="training's random rot90/flips: SemiSAM's less those that swap "
                        "anterior and posterior (class-aware), all of SemiSAM's, or none")
    parser.add_argument("--no-augment", dest="augment", action="store_const", const="none",
                        help="the same as --augment none")
    parser.add_argument("--settings", nargs="+", default=["a", "c-mpr", "d"],
                        choices=["a", "c", "c-semisam", "c-avg", "c-tta", "c-mpr", "d"],
                        help="b is student 0 of c's loop (c-avg, c-tta, c-mpr start from it too)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not (args.data / "images").is_dir():
        log.error("no hippocampus data at %s", args.data)
        return 2
    torch.set_num_threads(2)
    args.workdir.mkdir(parents=True, exist_ok=True)
    ids = volume_ids(args.data)
    split = split_ids(ids, args.holdout, args.labeled)
    stores = prepare_stores(args.data, args.workdir, split, CLASSES if args.classes else None)
    results_path = args.workdir / "results.json"
    header = {"date": date.today().isoformat(), "command": " ".join(sys.argv), "split": split,
              "iterations": args.iterations, "augment": args.augment,
              "classes": CLASSES.to_attrs() if args.classes else None}
    results = SavedResults(results_path, header)
    t0 = time.perf_counter()
    for seed in args.seeds:
        run_seed(seed, args, stores, results)
    lines = table(results)
    print("\n".join(lines))
    log.info("total %.0f s; results in %s", time.perf_counter() - t0, results_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
