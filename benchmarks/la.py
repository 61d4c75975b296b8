"""Left Atrium benchmark: SemiSAM's setting (2 labeled volumes, its hyper-parameters).

Split of the 32 volumes in ``../shared/data/la`` (order of ``volumes.list``): the first 2
labeled, the last ``--holdout`` held out for evaluation, the rest unlabeled. One loop (student
0 = labeled + Mean Teacher, ``--rounds`` rounds of pseudo-labels, students 1..) with
`TrainConfig`'s defaults, i.e. SemiSAM's values (patch 128^3, batch 1 labeled + 3 unlabeled,
SGD 0.01 / 0.9 / 1e-4, lr x0.1 every 2500 of 6000 iterations, EMA 0.99, consistency 0.1 with
sigmoid ramp-up, SAM term 0.1 with ramp-down). With fewer ``--iterations`` the ramps and lr
steps are rescaled to keep their shape. Evaluation as in SemiSAM's test script: sliding window,
largest connected component, Dice / Jaccard / 95HD / ASD in voxels.

    .venv/bin/python benchmarks/la.py --smoke                 # CPU, a few minutes
    .venv/bin/python benchmarks/la.py --iterations 2000       # GPU, under 10 minutes on an H100

The masker is the round's default, LiteMedSAM with its bundled trained weights, unless
``--sam-checkpoint`` names segment-anything weights.
Reference: Mean Teacher + SemiSAM, 2 labels: Dice 69.46% (paper), 71.63% (its code re-run).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import date
from pathlib import Path

import torch

from semisam.pipeline.evaluate import evaluate_student
from semisam.pipeline.ingest import ingest
from semisam.pipeline.loop import Loop
from semisam.schemas import LoopConfig, MaskerKind, RoundConfig, StudentSpec, TrainConfig

log = logging.getLogger("benchmarks.la")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "la"
SEMISAM_ITERATIONS = 6000


def split_ids(ids: list[str], labeled: int, holdout: int, unlabeled: int | None) -> dict[str, list[str]]:
    rest = ids[labeled:len(ids) - holdout]
    return {"labeled": ids[:labeled], "unlabeled": rest[:unlabeled] if unlabeled else rest,
            "heldout": ids[len(ids) - holdout:]}


def prepare(data: Path, work: Path, split: dict[str, list[str]]) -> tuple[Path, Path]:
    """``train.zarr`` (labeled + unlabeled with references) and ``heldout.zarr``."""
    train, heldout = work / "train.zarr", work / "heldout.zarr"
    files = [data / f"{i}.h5" for i in split["labeled"] + split["unlabeled"]]
    for store, paths, labeled in ((train, files, set(split["labeled"])),
                                  (heldout, [data / f"{i}.h5" for i in split["heldout"]], None)):
        report = ingest(store, paths, labeled=labeled)
        if not report.ok:
            raise SystemExit(f"ingest into {store} failed: {report.failed[0].reason}")
    return train, heldout


def train_config(iterations: int, smoke: bool) -> TrainConfig:
    """SemiSAM's LA values (the defaults), ramps and lr steps rescaled to ``iterations``."""
    cfg = TrainConfig(iterations=iterations, checkpoint_every=max(1, min(500, iterations // 4)),
                      amp=torch.cuda.is_available())
    scale = iterations / SEMISAM_ITERATIONS
    cfg.mean_teacher.ramp_unit = cfg.sam.ramp_unit = max(1, round(150 * scale))
    cfg.optimizer.step_every = max(1, round(2500 * scale))
    if smoke:  # a network and patch that a CPU trains for a few steps in minutes
        cfg.student = StudentSpec(channels=(8, 16, 32), strides=(2, 2), patch_size=(64, 64, 48))
    return cfg


def round_config(sam_checkpoint: Path | None) -> RoundConfig:
    cfg = RoundConfig()
    cfg.runtime.workers = max(1, min(8, (os.cpu_count() or 2) // 2))
    cfg.runtime.torch_threads = 2 if (os.cpu_count() or 2) >= 4 else 1
    if sam_checkpoint is not None:
        cfg.masker.kind, cfg.masker.sam.checkpoint = MaskerKind.sam, sam_checkpoint
    return cfg


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/la"))
    parser.add_argument("--iterations", type=int, default=SEMISAM_ITERATIONS)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--labeled", type=int, default=2)
    parser.add_argument("--holdout", type=int, default=8)
    parser.add_argument("--unlabeled", type=int, default=None, help="cap on unlabeled volumes")
    parser.add_argument("--sam-checkpoint", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true",
                        help="CPU smoke check: 4 iterations, small net, 3 unlabeled, 2 held-out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not (args.data / "volumes.list").is_file():
        log.error("no Left Atrium data at %s", args.data)
        return 2
    if args.smoke:
        args.iterations, args.unlabeled, args.holdout = 4, 3, 2
    ids = [ln.strip() for ln in (args.data / "volumes.list").read_text().splitlines() if ln.strip()]
    split = split_ids(ids, args.labeled, args.holdout, args.unlabeled)
    args.workdir.mkdir(parents=True, exist_ok=True)
    train, heldout = prepare(args.data, args.workdir, split)
    config = LoopConfig(train=train_config(args.iterations, args.smoke),
                        round=round_config(args.sam_checkpoint))
    t0 = time.perf_counter()
    state = Loop(train, config, args.workdir / "loop", eval_store=heldout).run(args.rounds)
    rows = []
    for row in state.rows:
        report = evaluate_student(heldout, Path(row.student), largest_component=True)
        rows.append({"round": row.round, "pseudo_label_dice": row.pseudo_label_dice,
                     "seconds": row.seconds, **{m: report.mean(m) for m in report.summary},
                     "dice_std": report.summary["dice"].std})
    result = {"date": date.today().isoformat(), "command": " ".join(sys.argv), "device": device_name(),
              "iterations": args.iterations, "split": split, "masker": config.round.masker.kind.value,
              "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    (args.workdir / "results.json").write_text(json.dumps(result, indent=2))
    print(f"LA, {len(split['labeled'])} labeled, {len(split['heldout'])} held out, {device_name()}, "
          f"{args.iterations} iterations, masker {result['masker']} (largest component, voxels)")
    print("| student | Dice | Jaccard | 95HD | ASD | pseudo-label Dice | s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [r["dice"], r["jaccard"], r["hd95_voxels"], r["asd_voxels"], r["pseudo_label_dice"]]
        print(f"| {r['round']} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in cells)
              + f" | {r['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
