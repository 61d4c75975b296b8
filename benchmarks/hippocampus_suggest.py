"""Hippocampus benchmark of `semisam suggest`: label the top-k suggested volumes or k random ones?

Binary hippocampus (MSD Task04, ``label > 0``), the split of `benchmarks/hippocampus.py` (50
held-out volumes, 4 labeled); to keep it CPU-cheap the unlabeled pool is the first ``--pool``
unlabeled ids of that split.

1. student 0: supervised on the 4 labels (``--iterations``, training seed ``--student0-seed``),
   shared by every seed to keep the run CPU-cheap;
2. round 1 over the pool: weight-free random-walker masker prompted by student 0 (the
   benchmark's `round_config`); shared too;
3. per seed, ``top``: the ``k`` volumes `semisam suggest` ranks first get their reference label
   (the same volumes for every seed); ``random``: ``k`` volumes drawn from the pool with the seed;
4. per seed, one more supervised `train` on 4 + k labels from student 0's weights (``--more``
   iterations, training seed = the seed) for each pick; every student is scored on the 50
   held-out volumes.

Results go to ``WORKDIR/results.json``; the table is printed; finished steps are reused.

    nice .venv/bin/python benchmarks/hippocampus_suggest.py --seeds 0 1 2 --more 100   # recorded run
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from semisam.pipeline.evaluate import evaluate_student_both
from semisam.pipeline.ingest import ingest
from semisam.pipeline.rounds.driver import run_round
from semisam.pipeline.suggest import rank_unlabeled
from semisam.store import open_store, read_meta, read_reference, write_volume
from semisam.training import train_student

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hippocampus import DATA, SavedResults, base_config, round_config, split_ids, volume_ids  # noqa: E402

log = logging.getLogger("benchmarks.hippocampus_suggest")


def prepare(data: Path, work: Path, split: dict[str, list[str]], pool: list[str]) -> dict[str, Path]:
    """``train.zarr`` (4 labeled + the pool, unlabeled with references) and ``heldout.zarr``."""
    images, labels = data / "images", data / "labels"
    stores = {"train": work / "train.zarr", "heldout": work / "heldout.zarr"}
    plans = {"train": ([images / f"{i}.nii.gz" for i in split["labeled"] + pool], set(split["labeled"])),
             "heldout": ([images / f"{i}.nii.gz" for i in split["heldout"]], None)}
    for name, (files, labeled) in plans.items():
        report = ingest(stores[name], files, labels_dir=labels, labeled=labeled, binarize=True)
        if not report.ok:
            raise SystemExit(f"ingest of {name} failed: {report.failed[0].reason}")
    return stores


def label_from_reference(store: Path, ids: list[str]) -> None:
    """The expert's answer, simulated: each volume's reference becomes its label."""
    root = open_store(store)
    for vid in ids:
        meta = read_meta(root, vid)
        image = np.asarray(root[f"volumes/{vid}/image"][...], dtype=np.float32)
        write_volume(root, meta.model_copy(update={"labeled": True}), image, read_reference(root, vid))


def score(ckpt: Path, heldout: Path) -> dict[str, float]:
    """Held-out Dice without and with largest component."""
    plain, lcc = evaluate_student_both(heldout, ckpt, device="cpu")
    return {"dice": plain.mean("dice"), "dice_lcc": lcc.mean("dice"), "hd95_mm": plain.mean("hd95_mm"),
            "n": len(plain.cases)}


def round_and_student0(args: argparse.Namespace, stores: dict[str, Path], results: dict
                       ) -> tuple[Path, list]:
    """Student 0 (trained once, seed ``--student0-seed``), its score and its round's ranking."""
    work = args.workdir / f"seed{args.student0_seed}"
    work.mkdir(parents=True, exist_ok=True)
    sup = base_config(args.iterations, args.student0_seed)
    sup.mean_teacher.enabled = sup.sam.enabled = False
    sup.batch.unlabeled = 0
    student0 = work / "student0.pt"
    train_student(stores["train"], student0, sup, resume=True)
    if "student0/shared" not in results:
        results["student0/shared"] = score(student0, stores["heldout"])
    round_store = work / "round.zarr"
    if not round_store.exists():
        shutil.copytree(stores["train"], round_store)
    run_round(round_store, 1, student0, round_config(), show_progress=False)
    _, ranked = rank_unlabeled(open_store(round_store, read_only=True), 1)
    log.info("round 1 ranking: %s", [(s.volume_id, s.score) for s in ranked])
    if "ranking/shared" not in results:
        results["ranking/shared"] = ranking_check(round_store, ranked, args.k)
    return student0, ranked


def ranking_check(store: Path, ranked: list, k: int) -> dict:
    """Does the score find the poor pseudo-labels? Spearman correlation of the score with each
    volume's pseudo-label Dice against its reference, and the mean Dice of the top k vs all."""
    from scipy.stats import spearmanr

    from semisam.pipeline.presentation.report import reference_dice
    from semisam.store import read_output

    root = open_store(store, read_only=True)
    dice = [reference_dice(read_output(root, 1, "pseudo_label", s.volume_id),
                           read_reference(root, s.volume_id)) for s in ranked]
    return {"volumes": len(ranked), "spearman_score_vs_pl_dice": float(spearmanr([s.score for s in ranked], dice)[0]),
            "pl_dice_top_k": float(np.mean(dice[:k])), "pl_dice_all": float(np.mean(dice)),
            "rejected": int(sum(s.rejected for s in ranked)),
            "score": {s.volume_id: s.score for s in ranked}}


def run_seed(seed: int, args: argparse.Namespace, stores: dict[str, Path], pool: list[str],
             student0: Path, ranked: list, results: dict) -> None:
    """The two picks' students for one seed."""
    work = args.workdir / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    picks = {"top": [s.volume_id for s in ranked[: args.k]],
             "random": sorted(np.random.default_rng(seed).choice(pool, args.k, replace=False).tolist())}
    more = base_config(args.more, seed)
    more.mean_teacher.enabled = more.sam.enabled = False
    more.batch.unlabeled = 0
    for name, ids in picks.items():
        key = f"{name}/{seed}"
        if key in results:
            continue
        store = work / f"{name}.zarr"
        if not store.exists():
            shutil.copytree(stores["train"], store)
            label_from_reference(store, ids)
        ckpt = work / f"{name}.pt"
        seconds = train_student(store, ckpt, more, resume=True, init=student0).seconds
        results[key] = {**score(ckpt, stores["heldout"]), "seconds": seconds, "picked": ids,
                        "scores": {s.volume_id: s.score for s in ranked if s.volume_id in ids}}
        log.info("seed %d %s: %s", seed, name, results[key])


def table(results: dict) -> list[str]:
    """Mean +- std over seeds per setting, and the paired top - random difference."""
    lines = ["| setting | seeds | Dice | Dice (LCC) | 95HD mm |", "|---|---|---|---|---|"]
    for name in ("student0", "random", "top"):  # student0: one shared row
        rows = [v for k, v in results.items() if k.split("/")[0] == name]
        if not rows:
            continue
        cells = [f"{np.mean([r[m] for r in rows]):.3f} +- {np.std([r[m] for r in rows]):.3f}"
                 for m in ("dice", "dice_lcc", "hd95_mm")]
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")
    seeds = sorted({k.split("/")[1] for k in results if k.startswith("top/")}
                   & {k.split("/")[1] for k in results if k.startswith("random/")})
    diffs = [results[f"top/{s}"]["dice"] - results[f"random/{s}"]["dice"] for s in seeds]
    if diffs:
        lines.append(f"top - random Dice per seed: {', '.join(f'{d:+.3f}' for d in diffs)}")
    check = results.get("ranking/shared")
    if check:
        lines.append(f"round 1: Spearman(score, pseudo-label Dice) {check['spearman_score_vs_pl_dice']:+.2f} "
                     f"over {check['volumes']} volumes; pseudo-label Dice of the top k"
                     f" {check['pl_dice_top_k']:.3f} vs all {check['pl_dice_all']:.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/hippocampus-suggest"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--iterations", type=int, default=400, help="student 0's iterations")
    parser.add_argument("--student0-seed", type=int, default=0)
    parser.add_argument("--more", type=int, default=150, help="the one more train's iterations")
    parser.add_argument("--pool", type=int, default=40, help="unlabeled volumes in the round")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not (args.data / "images").is_dir():
        log.error("no hippocampus data at %s", args.data)
        return 2
    torch.set_num_threads(2)
    args.workdir.mkdir(parents=True, exist_ok=True)
    ids = volume_ids(args.data)
    split = split_ids(ids, 50, 4)
    pool = split["unlabeled"][: args.pool]
    stores = prepare(args.data, args.workdir, split, pool)
    header = {"date": date.today().isoformat(), "command": " ".join(sys.argv), "pool": pool,
              "labeled": split["labeled"], "iterations": args.iterations,
              "student0_seed": args.student0_seed, "more": args.more, "k": args.k}
    results = SavedResults(args.workdir / "results.json", header)
    t0 = time.perf_counter()
    student0, ranked = round_and_student0(args, stores, results)
    for seed in args.seeds:
        run_seed(seed, args, stores, pool, student0, ranked, results)
        log.info("seed %d done at %.0f s", seed, time.perf_counter() - t0)
    print("\n".join(table(results)))
    log.info("total %.0f s", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
