"""Left Atrium benchmark: the SemiSAM paper's experiment, with a trained SAM (LiteMedSAM).

Split of the 32 volumes in ``../shared/data/la`` (order of ``volumes.list``, fixed): the last
``--holdout`` (8) held out for evaluation, the first ``L`` (``--labeled 2 4``) labeled, the rest
of the first 24 unlabeled (reference labels used only to score pseudo-labels). Settings, each a
student evaluated on the held-out volumes (sliding window; Dice, Jaccard, 95HD and ASD in
voxels, with and without keeping the largest component, as the paper reports):

    a    supervised on the L labeled volumes
    b    Mean Teacher: L labeled + the unlabeled volumes (student 0 of the loop)
    c    b + SemiSAM: round 1's pseudo-labels from LiteMedSAM prompted by b (the round's default
         recipe), SemiSAM's own SAM term (MSE, weight 0.1, ramp-down) with Mean Teacher; trained
         from scratch as SemiSAM does (student 1 of the loop)
    c+   the project's recipe on the same round: SAM term CE + soft Dice of weight 1, every
         voxel weighted 1, starting from b's weights (the recipe that won on hippocampus:
         docs/benchmarks.md)
    d    supervised on all 24 training volumes (the ceiling; one per seed, shared by both L)

With ``--rounds R`` (R > 1) c+ goes on: c+2, c+3.. each from a LiteMedSAM round prompted by the
previous c+ student (in a copy of the loop's store, ``plus.zarr``), warm-started from it. Variants
of c+ (``--settings c+nomt c+a c+conf c+mpr``, `VARIANTS`) compare recipe changes on one seed;
c+mpr has its own round 1 (in ``mpr.zarr``): b prompts along all three slice axes, LiteMedSAM
masks each and their probabilities are averaged where they overlap (``prompts.extra_axes``), b's
probability itself averaged over flips of axes 0 and 1 (``student.flip_axes``).

Schedules (``--schedule``):

    cpu    every volume resampled to half size on each axis first (``--scale`` 0.5: about
           92x70x44 voxels, 8x fewer; metrics are in those voxels), UNet 16-32-64-128 (strides
           2, 1 residual unit), patch 64x64x40, 1500 iterations, batch 2 labeled (+ 2
           unlabeled with Mean Teacher), half the labeled patches centred on foreground
           (``batch.foreground_prob`` 0.5), Adam 1e-3 with poly decay, ramps of 40 units of
           37 iterations; LiteMedSAM encoder batches of 2 (the fastest on an AMD EPYC,
           docs/benchmarks.md). At full size 600 iterations of patch 80x80x56 trained no
           ceiling: the 24-label student scored 0.56 Dice, below the 2-label one (0.58), and
           only 0.48-0.61 on its own training volumes.
    paper  SemiSAM's: V-Net, patch 112x112x80, 6000 iterations, batch 2 + 2, SGD 0.01 / 0.9 /
           1e-4, lr x0.1 every 2500 iterations, EMA 0.99, ramps of 40 units of 150 iterations;
           for a GPU.

Every finished student, round and evaluation is reused when the command is rerun (results in
``WORKDIR/results.json``, rewritten after each step); the table is printed at the end.

    .venv/bin/python benchmarks/la.py --smoke                        # a few minutes: the path
    .venv/bin/python benchmarks/la.py --labeled 2 --seeds 0 1 2      # CPU schedule, 2 labels
    .venv/bin/python benchmarks/la.py --labeled 4 --seeds 0          # CPU schedule, 4 labels
    .venv/bin/python benchmarks/la.py --labeled 2 --seeds 0 --rounds 2   # + c+2
    .venv/bin/python benchmarks/la.py --schedule paper --labeled 2 --settings c   # GPU

Reference: Mean Teacher + SemiSAM, 2 labels: Dice 69.46% (paper), 71.63% (its code re-run).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import h5py
import numpy as np
import torch
from hippocampus import SavedResults

from semisam.pipeline.evaluate import evaluate_student_both
from semisam.pipeline.ingest import ingest
from semisam.pipeline.loop import Loop, pseudo_label_dice
from semisam.pipeline.rounds.driver import run_round
from semisam.schemas import (
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
from semisam.training import train_student

log = logging.getLogger("benchmarks.la")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "la"
SETTINGS = ("a", "b", "c", "c+", "d")
# variants of c+ compared on one seed before one becomes c+ (--settings c+nomt ...), one round each:
#   c+nomt  no Mean Teacher term (b scored below a: the consistency term costs on 2 labels)
#   c+a     warm start from a (the stronger 2-label student) instead of b
#   c+conf  the SAM term weighted by the round's per-voxel confidence
#   c+mpr   c+ on its own multi-planar round 1 (`mpr_round`)
VARIANTS = ("c+nomt", "c+a", "c+conf", "c+mpr")
MPR_AXES = (0, 1)  # c+mpr: slice axes added to the round's own (2), and the prompter's flips
METRICS = ("dice", "jaccard", "hd95_voxels", "asd_voxels")
CPU_PATCH, CPU_ITERATIONS = (64, 64, 40), 1500  # the cpu schedule, on volumes at half size
PAPER = {"c": {"dice": 0.6946}}  # Mean Teacher + SemiSAM, 2 labels (the paper's table)


def split_ids(ids: list[str], labeled: int, holdout: int, unlabeled: int | None = None
              ) -> dict[str, list[str]]:
    """The fixed split: ``labeled`` first, ``holdout`` last, the rest (capped) unlabeled."""
    train = ids[:len(ids) - holdout]
    rest = train[labeled:]
    return {"labeled": train[:labeled], "unlabeled": rest[:unlabeled] if unlabeled else rest,
            "heldout": ids[len(ids) - holdout:]}


def downsampled(data: Path, out: Path, ids: list[str], scale: float) -> Path:
    """``out`` holding every volume of ``ids`` resampled by ``scale`` on each axis, in the same
    h5 layout (image: linear interpolation; label: the linearly interpolated mask > 0.5);
    files already there are kept. ``scale`` 1: ``data`` itself."""
    if scale == 1:
        return data
    from scipy import ndimage

    out.mkdir(parents=True, exist_ok=True)
    for vid in ids:
        target = out / f"{vid}.h5"
        if target.is_file():
            continue
        with h5py.File(data / f"{vid}.h5", "r") as fh:
            image = np.asarray(fh["image"], np.float32)
            label = np.asarray(fh["label"]) > 0
        small = ndimage.zoom(image, scale, order=1)
        mask = ndimage.zoom(label.astype(np.float32), scale, order=1) > 0.5
        tmp = target.with_suffix(".tmp")
        with h5py.File(tmp, "w") as fh:
            fh.create_dataset("image", data=small.astype(np.float32))
            fh.create_dataset("label", data=mask.astype(np.uint8))
        tmp.replace(target)
    log.info("volumes at scale %.2f in %s", scale, out)
    return out


def prepare(data: Path, work: Path, split: dict[str, list[str]]) -> dict[str, Path]:
    """``train-L<n>.zarr`` (labeled + unlabeled with references), ``full.zarr`` (every training
    volume labeled) and ``heldout.zarr``; existing stores are kept."""
    files = [data / f"{i}.h5" for i in split["labeled"] + split["unlabeled"]]
    stores = {"train": work / f"train-L{len(split['labeled'])}.zarr", "full": work / "full.zarr",
              "heldout": work / "heldout.zarr"}
    plans = {"train": (files, set(split["labeled"])), "full": (files, None),
             "heldout": ([data / f"{i}.h5" for i in split["heldout"]], None)}
    for name, (paths, labeled) in plans.items():
        if (stores[name] / "zarr.json").is_file():
            continue
        report = ingest(stores[name], paths, labeled=labeled)
        if not report.ok:
            raise SystemExit(f"ingest into {stores[name]} failed: {report.failed[0].reason}")
    return stores


def schedule_config(schedule: str, seed: int, smoke: bool) -> TrainConfig:
    """Mean Teacher + SemiSAM's SAM term (setting b/c) in the chosen schedule."""
    cfg = TrainConfig(seed=seed, amp=torch.cuda.is_available())
    cfg.batch.labeled, cfg.batch.unlabeled = 2, 2
    if schedule == "paper":
        cfg.student = StudentSpec(architecture="monai.VNet", patch_size=(112, 112, 80))
        cfg.iterations, cfg.checkpoint_every = 6000, 500
        return cfg
    cfg.student = StudentSpec(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1,
                              patch_size=CPU_PATCH)
    cfg.iterations, cfg.checkpoint_every, cfg.threads = CPU_ITERATIONS, 250, os.cpu_count() or 2
    cfg.batch.foreground_prob = 0.5
    cfg.optimizer.kind, cfg.optimizer.lr, cfg.optimizer.weight_decay = OptimizerKind.adam, 1e-3, 1e-4
    cfg.optimizer.schedule = LrSchedule.poly
    cfg.mean_teacher.ramp_unit = cfg.sam.ramp_unit = CPU_ITERATIONS // 40  # SemiSAM: 40 units
    if smoke:  # the same path on a network and patch a CPU trains for a few steps in seconds
        cfg.student = StudentSpec(channels=(8, 16, 32), strides=(2, 2), patch_size=(48, 48, 32))
        cfg.iterations, cfg.checkpoint_every = 4, 2
        cfg.mean_teacher.ramp_unit = cfg.sam.ramp_unit = 1
    return cfg


def configs(schedule: str, seed: int, smoke: bool) -> dict[str, TrainConfig]:
    """Training config of every setting (b and c share the loop's config)."""
    semisam = schedule_config(schedule, seed, smoke)
    sup = semisam.model_copy(deep=True)
    sup.mean_teacher.enabled = sup.sam.enabled = False
    sup.batch.unlabeled = 0
    plus = semisam.model_copy(deep=True)
    plus.sam.loss, plus.sam.weight, plus.sam.confidence_weighted = SamLoss.ce_dice, 1.0, False
    plus.sam.schedule, plus.sam.normalization = RampSchedule.constant, SamNormalization.voxels
    nomt, conf = plus.model_copy(deep=True), plus.model_copy(deep=True)
    nomt.mean_teacher.enabled = False
    conf.sam.confidence_weighted = True
    return {"a": sup, "b": semisam, "c": semisam, "c+": plus, "d": sup,
            "c+nomt": nomt, "c+a": plus, "c+conf": conf}


def round_config(masker: MaskerKind, sam_checkpoint: Path | None,
                 embedding_cache: Path | None = None) -> RoundConfig:
    """The round's defaults for ``masker`` (LiteMedSAM: three propagation chains, average
    fusion, largest component); one worker with every core unless there are many.
    ``embedding_cache``: LiteMedSAM's image embeddings kept there (the seeds and L share the
    unlabeled slices, so only the first round pays for the encoder)."""
    cfg = RoundConfig()
    cfg.masker.kind = masker
    cfg.masker.litemedsam.embedding_cache = embedding_cache
    if not torch.cuda.is_available():
        cfg.masker.litemedsam.batch_size = 2
    if sam_checkpoint is not None:
        cfg.masker.kind, cfg.masker.sam.checkpoint = MaskerKind.sam, sam_checkpoint
    cores = os.cpu_count() or 2
    cfg.runtime.workers = 1 if cores <= 4 or torch.cuda.is_available() else min(8, cores // 4)
    cfg.runtime.torch_threads = max(1, cores // cfg.runtime.workers)
    return cfg


def args_round_config(args: argparse.Namespace) -> RoundConfig:
    """`round_config` from the command line: masker, SAM checkpoint, embedding cache in
    ``WORKDIR/embeddings`` unless ``--no-embedding-cache``."""
    cache = None if args.no_embedding_cache else args.workdir / "embeddings"
    return round_config(args.masker, args.sam_checkpoint, cache)


def evaluate(student: Path, heldout: Path, previous: dict | None) -> dict:
    """Held-out metrics without and with largest component (``_lcc``); reused when
    ``previous`` was measured on this very checkpoint file."""
    stamp = student.stat().st_mtime_ns
    if previous and previous.get("checkpoint_mtime_ns") == stamp:
        return previous
    out: dict = {"checkpoint_mtime_ns": stamp}
    for lcc, report in zip((False, True), evaluate_student_both(heldout, student)):
        suffix = "_lcc" if lcc else ""
        out.update({f"{m}{suffix}": report.mean(m) for m in METRICS})
        out["n"] = len(report.cases)
    return out


def train(store: Path, out: Path, cfg: TrainConfig, round_index: int | None = None,
          init: Path | None = None) -> float:
    """Train (or resume, or reuse) one student; its training seconds."""
    return train_student(store, out, cfg, round_index=round_index, resume=True, init=init).seconds


def run(labeled: int, seed: int, args: argparse.Namespace, stores: dict[str, Path],
        results: SavedResults) -> None:
    """Every requested setting for ``labeled`` labels and one seed."""
    cfgs = configs(args.schedule, seed, args.smoke)
    work = args.workdir / f"L{labeled}" / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)

    def record(setting: str, student: Path, seconds: float, **extra) -> None:
        key = f"{setting}/L{labeled}/{seed}" if setting != "d" else f"d/all/{seed}"
        results[key] = {**evaluate(student, stores["heldout"], results.get(key)),
                        "seconds": round(seconds, 1), **extra}
        log.info("%s: %s", key, {k: results[key][k] for k in ("dice", "dice_lcc")})

    if "a" in args.settings:
        record("a", work / "a.pt", train(stores["train"], work / "a.pt", cfgs["a"]))
    if "d" in args.settings:
        ckpt = args.workdir / "d" / f"seed{seed}.pt"
        record("d", ckpt, train(stores["full"], ckpt, cfgs["d"]))
    wanted = {"b", "c", "c+", *VARIANTS} & set(args.settings)
    if not wanted:
        return
    store = work / "loop.zarr"  # the loop writes rounds: one copy of the store per seed
    if not store.exists():
        shutil.copytree(stores["train"], store)
    rounds = 1 if wanted - {"b"} else 0
    state = Loop(store, LoopConfig(train=cfgs["c"], round=args_round_config(args)),
                 work / "loop").run(rounds)
    student0 = Path(state.rows[0].student)
    if "b" in wanted:
        record("b", student0, state.rows[0].train_seconds)
    if rounds:
        row = state.rows[1]
        if "c" in wanted:
            record("c", Path(row.student), row.train_seconds, pseudo_label_dice=row.pseudo_label_dice,
                   round_seconds=row.round_seconds)
        if "c+" in wanted:
            plus_rounds(work, store, student0, row.pseudo_label_dice, cfgs["c+"], args, record)
        if "c+mpr" in wanted:
            mpr_round(work, stores["train"], student0, cfgs["c+"], args, record)
        for variant in [v for v in VARIANTS if v in wanted and v != "c+mpr"]:
            ckpt = work / f"{variant}.pt"
            init = work / "a.pt" if variant == "c+a" else student0
            if not init.exists():
                raise SystemExit(f"{variant}: needs {init} (train setting a first)")
            record(variant, ckpt, train(store, ckpt, cfgs[variant], 1, init=init),
                   pseudo_label_dice=row.pseudo_label_dice)


def round_volume_seconds(store: Path, round_index: int, student: Path, cfg: RoundConfig) -> float:
    """Run (or find done) round ``round_index`` on ``store``; the sum of its volumes' own
    recorded seconds (the same when a rerun finds the round done)."""
    summary = run_round(store, round_index, student, cfg, show_progress=False)
    return sum(v.seconds or 0.0 for v in summary.volumes)


def plus_rounds(work: Path, loop_store: Path, student0: Path, round1_dice: float | None,
                cfg: TrainConfig, args: argparse.Namespace, record: Callable[..., None]) -> None:
    """Setting c+ for ``args.rounds`` rounds: c+ (round 1, the loop's pseudo-labels, shared
    with c), then c+2, c+3..: a LiteMedSAM round prompted by the previous c+ student in
    ``WORKDIR/L*/seed*/plus.zarr`` (a copy of the loop's store after round 1) and a student
    warm-started from the previous one on those pseudo-labels. ``round1_dice``: the loop's
    pseudo-label Dice of round 1 (already in its state)."""
    previous = work / "c+.pt"
    record("c+", previous, train(loop_store, previous, cfg, 1, init=student0),
           pseudo_label_dice=round1_dice)
    if args.rounds < 2:
        return
    store = work / "plus.zarr"
    if not store.exists():
        shutil.copytree(loop_store, store)
    for r in range(2, args.rounds + 1):
        volume_seconds = round_volume_seconds(store, r, previous, args_round_config(args))
        ckpt = work / f"c+{r}.pt"
        record(f"c+{r}", ckpt, train(store, ckpt, cfg, r, init=previous),
               pseudo_label_dice=pseudo_label_dice(store, r),
               round_volume_seconds=round(volume_seconds, 1))
        previous = ckpt


def mpr_round(work: Path, train_store: Path, student0: Path, cfg: TrainConfig,
              args: argparse.Namespace, record: Callable[..., None]) -> None:
    """Variant c+mpr: a multi-planar round 1 prompted by ``student0`` (b) in its own copy of
    the training store (``WORKDIR/L*/seed*/mpr.zarr``): prompts and LiteMedSAM masks along
    slice axes 2, 0 and 1 (averaged where they overlap), the student's probability averaged over
    flips of axes 0 and 1; then c+'s training on it, warm-started from b."""
    store = work / "mpr.zarr"
    if not store.exists():
        shutil.copytree(train_store, store)
    round_cfg = args_round_config(args)
    round_cfg.prompts.extra_axes = MPR_AXES
    round_cfg.student.flip_axes = MPR_AXES
    volume_seconds = round_volume_seconds(store, 1, student0, round_cfg)
    ckpt = work / "c+mpr.pt"
    record("c+mpr", ckpt, train(store, ckpt, cfg, 1, init=student0),
           pseudo_label_dice=pseudo_label_dice(store, 1), round_volume_seconds=round(volume_seconds, 1))


def table(results: dict) -> list[str]:
    """Mean +- std over seeds per (setting, labels), and the share of the a-d gap closed."""
    groups: dict[tuple[str, str], list[dict]] = {}
    seeds: dict[tuple[str, str], dict[str, dict]] = {}  # (setting, labels) -> seed -> figures
    for key, value in results.items():
        setting, labels, seed = key.split("/")
        groups.setdefault((setting, labels), []).append(value)
        seeds.setdefault((setting, labels), {})[seed] = value

    def stat(rows: list[dict], key: str, digits: int = 3) -> str:
        vals = [r[key] for r in rows if r.get(key) is not None]
        if not vals:
            return "-"
        return (f"{np.mean(vals):.{digits}f} +- {np.std(vals):.{digits}f}" if len(vals) > 1
                else f"{vals[0]:.{digits}f}")

    def gap(setting: str, labels: str, key: str) -> str:
        """Share of the a-d gap in ``key`` that ``setting`` closes, a and d averaged over the
        seeds ``setting`` has (a one-seed variant is compared with that seed's a and d)."""
        if setting in ("a", "d"):
            return "-"
        here, a_rows, d_rows = (seeds.get((setting, labels), {}), seeds.get(("a", labels), {}),
                                seeds.get(("d", "all"), {}))
        common = [s for s in here if s in a_rows and s in d_rows
                  and all(r[s].get(key) is not None for r in (here, a_rows, d_rows))]
        if not common:
            return "-"
        a, d, value = (float(np.mean([rows[s][key] for s in common]))
                       for rows in (a_rows, d_rows, here))
        return f"{(value - a) / (d - a):.0%}" if d != a else "-"

    lines = ["| setting | labels | seeds | Dice | Dice (LCC) | Jaccard (LCC) | 95HD vox (LCC) | "
             "ASD vox (LCC) | pseudo-label Dice | gap closed | gap closed (LCC) | s / seed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    def order(setting: str) -> tuple[int, str]:  # c+2, c+3.. after c+
        base = "c+" if setting.startswith("c+") else setting
        return SETTINGS.index(base), setting

    for (setting, labels), rows in sorted(groups.items(), key=lambda kv: (kv[0][1], order(kv[0][0]))):
        lines.append(f"| {setting} | {labels} | {len(rows)} | {stat(rows, 'dice')} | "
                     f"{stat(rows, 'dice_lcc')} | {stat(rows, 'jaccard_lcc')} | "
                     f"{stat(rows, 'hd95_voxels_lcc', 2)} | {stat(rows, 'asd_voxels_lcc', 2)} | "
                     f"{stat(rows, 'pseudo_label_dice')} | {gap(setting, labels, 'dice')} | "
                     f"{gap(setting, labels, 'dice_lcc')} | {stat(rows, 'seconds', 0)} |")
    return lines


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/la"))
    parser.add_argument("--schedule", choices=["cpu", "paper"], default="cpu")
    parser.add_argument("--labeled", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS),
                        choices=SETTINGS + VARIANTS)
    parser.add_argument("--scale", type=float, default=None,
                        help="resample every volume by this factor per axis first (default: 0.5 "
                        "for the cpu schedule, 1 for paper); metrics are in the resampled voxels")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of setting c+ (c+2, c+3..: each prompted by the previous c+)")
    parser.add_argument("--holdout", type=int, default=8)
    parser.add_argument("--unlabeled", type=int, default=None, help="cap on unlabeled volumes")
    parser.add_argument("--masker", type=MaskerKind, default=MaskerKind.litemedsam,
                        choices=list(MaskerKind))
    parser.add_argument("--masker-checkpoint", "--sam-checkpoint", dest="sam_checkpoint",
                        type=Path, default=None,
                        help="segment-anything weights (masker sam) instead of LiteMedSAM")
    parser.add_argument("--no-embedding-cache", action="store_true",
                        help="encode every round's slices again (default: LiteMedSAM's image "
                        "embeddings kept in WORKDIR/embeddings, ~4 MiB a slice, shared by seeds)")
    parser.add_argument("--smoke", action="store_true",
                        help="the whole path in minutes: 4 iterations of a small net, 1 unlabeled "
                             "and 2 held-out volumes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not (args.data / "volumes.list").is_file():
        log.error("no Left Atrium data at %s", args.data)
        return 2
    if args.smoke:
        args.unlabeled, args.holdout = 1, 2
        args.labeled, args.workdir = args.labeled[:1], args.workdir / "smoke"
    torch.set_num_threads(os.cpu_count() or 2)
    ids = [ln.strip() for ln in (args.data / "volumes.list").read_text().splitlines() if ln.strip()]
    args.workdir.mkdir(parents=True, exist_ok=True)
    scale = args.scale or (0.5 if args.schedule == "cpu" else 1.0)
    data = downsampled(args.data, args.workdir / f"data-x{scale:g}", ids, scale)
    header = {"date": date.today().isoformat(), "command": " ".join(sys.argv),
              "device": device_name(), "schedule": args.schedule, "scale": scale,
              "masker": args.masker.value, "paper": PAPER}
    results = SavedResults(args.workdir / "results.json", header)
    t0 = time.perf_counter()
    for labeled in args.labeled:
        split = split_ids(ids, labeled, args.holdout, args.unlabeled)
        header[f"split_L{labeled}"] = split
        stores = prepare(data, args.workdir, split)
        for seed in args.seeds:
            run(labeled, seed, args, stores, results)
    print(f"LA, {args.schedule} schedule, {device_name()}, masker {args.masker.value}; held-out "
          f"Dice etc. (voxels); paper, Mean Teacher + SemiSAM with 2 labels: Dice 0.6946")
    print("\n".join(table(results)))
    log.info("total %.0f s; results in %s", time.perf_counter() - t0, args.workdir / "results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
