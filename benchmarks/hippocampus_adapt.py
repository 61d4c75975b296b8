"""Hippocampus, both structures: LiteMedSAM adapted to the 4 labeled volumes vs the weight-free
random walker and frozen LiteMedSAM, round 1's pseudo-labels (CPU).

The split, network, class-aware augmentation and round recipe (c-mpr: the masker along all three
slice axes, average fusion with the student, flip test-time augmentation on the kept axis) of
``benchmarks/hippocampus.py --classes``. To keep LiteMedSAM's encoder affordable on a CPU the
store holds the 4 labeled volumes and the first ``--unlabeled`` (30) unlabeled ones; every
round is prompted by the same student, ``a`` (supervised on the 4 labels), so the maskers are
compared on equal prompts:

    random_walker   the weight-free masker (the recipe whose round 2 reached 0.840)
    frozen          LiteMedSAM with its bundled weights
    adapted         LiteMedSAM after `adapt_masker` on the 4 labeled volumes (examples from the
                    round's three slice axes; ``--adapt-config`` JSON overrides `AdaptConfig`)

Per masker: pseudo-label Dice per class and its mean against the references, 95HD, round
seconds; the student's own Dice on the same volumes. Results in ``WORKDIR/results.json``
(reused on rerun: a finished round or adaptation is not redone).

    .venv/bin/python benchmarks/hippocampus_adapt.py --workdir bench-out/hippocampus-adapt
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
from hippocampus import (
    CLASSES,
    DATA,
    SavedResults,
    configs,
    fused_round_config,
    split_ids,
    train_one,
    tta_axes,
    volume_ids,
)

from semisam.pipeline.evaluate import evaluate_round
from semisam.pipeline.ingest import ingest
from semisam.pipeline.rounds.driver import run_round
from semisam.schemas import AdaptConfig, MaskerKind, RoundConfig
from semisam.store import list_metas, open_store, read_output, read_reference
from semisam.training.adaptation import adapt_masker
from semisam.training.metrics import dice

log = logging.getLogger("benchmarks.hippocampus_adapt")

MASKERS = ("random_walker", "frozen", "adapted")


def train_store(data: Path, work: Path, split: dict[str, list[str]], unlabeled: int) -> Path:
    """``WORKDIR/train.zarr``: the labeled volumes and the first ``unlabeled`` unlabeled ones
    (their references kept for scoring), both structures."""
    store = work / "train.zarr"
    if not (store / "zarr.json").is_file():
        ids = split["labeled"] + split["unlabeled"][:unlabeled]
        report = ingest(store, [data / "images" / f"{i}.nii.gz" for i in ids],
                        labels_dir=data / "labels", labeled=set(split["labeled"]),
                        binarize=False, classes=CLASSES)
        if not report.ok:
            raise SystemExit(f"ingest into {store} failed: {report.failed[0].reason}")
    return store


def masker_round_config(name: str, flips: tuple[int, ...], cache: Path,
                        adapted: Path | None) -> RoundConfig:
    """c-mpr's round config with ``name``'s masker; LiteMedSAM's embeddings cached in
    ``cache`` (shared by frozen and adapted: only the decoder side is tuned)."""
    cfg = fused_round_config("c-mpr", flips)
    if name != "random_walker":
        cfg.masker.kind = MaskerKind.litemedsam
        cfg.masker.litemedsam.embedding_cache = cache
        cfg.masker.litemedsam.batch_size = 4
        if name == "adapted":
            cfg.masker.litemedsam.checkpoint = adapted
    return cfg


def per_volume(store: Path, student: Path) -> dict[str, dict]:
    """Round 1's pseudo-label vs reference per volume: Dice per class, their mean, 95HD; and
    the student's own Dice on the same volume."""
    root = open_store(store, read_only=True)
    ev = evaluate_round(store, 1, student)
    own = {c.volume_id: c.dice for c in ev.student.cases}
    hd = {c.volume_id: c.hd95_voxels for c in ev.pseudo_label.cases}
    out = {}
    for meta in list_metas(root):
        if meta.labeled or meta.volume_id not in own:
            continue
        label = np.asarray(read_output(root, 1, "pseudo_label", meta.volume_id))
        ref = np.asarray(read_reference(root, meta.volume_id))
        per_class = {str(v): float(dice(label == v, ref == v)) for v in CLASSES.values}
        out[meta.volume_id] = {"dice": float(np.mean(list(per_class.values()))),
                               "dice_class": per_class, "hd95": hd[meta.volume_id],
                               "student_dice": own[meta.volume_id]}
    return out


def summary(results: dict) -> list[str]:
    """One table row per masker."""
    lines = ["| masker | pseudo-label Dice (mean of classes) | anterior | posterior | 95HD (vox) "
             "| better than the student | round s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name in MASKERS:
        row = results.get(f"round/{name}")
        if not row:
            continue
        vols = row["volumes"].values()
        hd = [v["hd95"] for v in vols if v["hd95"] is not None]
        better = sum(v["dice"] > v["student_dice"] for v in vols)
        lines.append(
            f"| {name} | {np.mean([v['dice'] for v in vols]):.3f} | "
            f"{np.mean([v['dice_class']['1'] for v in vols]):.3f} | "
            f"{np.mean([v['dice_class']['2'] for v in vols]):.3f} | {np.mean(hd):.2f} | "
            f"{better}/{len(vols)} | {row['seconds']} |")
    if "student" in results:
        lines.append(f"student a on the same volumes: Dice {results['student']['dice']:.3f}")
    if "adapt" in results:
        a = results["adapt"]
        lines.append(f"adaptation: {a['seconds']} s, held-out labeled-slice Dice "
                     f"{a['held_out_dice_base']} -> {a['held_out_dice']} (step "
                     f"{a['best_iteration']})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/hippocampus-adapt"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=1100, help="the student's")
    parser.add_argument("--unlabeled", type=int, default=30)
    parser.add_argument("--maskers", nargs="+", choices=MASKERS, default=list(MASKERS))
    parser.add_argument("--cache", type=Path, default=None,
                        help="LiteMedSAM's embedding cache (default WORKDIR/embeddings)")
    parser.add_argument("--adapt-config", type=Path, default=None,
                        help="JSON of AdaptConfig fields over the default")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not (args.data / "images").is_dir():
        log.error("no hippocampus data at %s", args.data)
        return 2
    torch.set_num_threads(2)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    cache = args.cache or work / "embeddings"
    ids = volume_ids(args.data)
    split = split_ids(ids, 50, 4)
    store = train_store(args.data, work, split, args.unlabeled)
    header = {"date": date.today().isoformat(), "command": " ".join(sys.argv), "device": "CPU",
              "labeled": split["labeled"], "unlabeled": split["unlabeled"][:args.unlabeled]}
    results = SavedResults(work / "results.json", header)
    cfg_a = configs(args.iterations, args.seed)["a"]
    student = work / "a.pt"
    train_one(store, student, cfg_a)
    flips = tta_axes(store, cfg_a)
    adapted = work / "adapted_litemedsam.pth"
    if "adapted" in args.maskers and "adapt" not in results:
        overrides = json.loads(args.adapt_config.read_text()) if args.adapt_config else {}
        config = AdaptConfig.model_validate({"seed": args.seed, "embedding_cache": cache,
                                             "encoder_batch_size": 4, **overrides})
        result = adapt_masker(store, adapted, config, masker_round_config(
            "frozen", flips, cache, None), resume=True)
        results["adapt"] = {**result.meta.model_dump(mode="json", exclude={"config"}),
                            "overrides": overrides}
    for name in args.maskers:
        if f"round/{name}" in results:
            continue
        copy = work / f"{name}.zarr"
        if not copy.exists():  # else an interrupted round, which run_round resumes
            shutil.copytree(store, copy)
        t0 = time.perf_counter()
        run_round(copy, 1, student, masker_round_config(name, flips, cache, adapted),
                  show_progress=False)
        seconds = round(time.perf_counter() - t0, 1)
        vols = per_volume(copy, student)
        results[f"round/{name}"] = {"seconds": seconds, "volumes": vols}
        if "student" not in results:
            results["student"] = {"dice": float(np.mean([v["student_dice"]
                                                         for v in vols.values()]))}
        print("\n".join(summary(results)), flush=True)
    print("\n".join(summary(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
