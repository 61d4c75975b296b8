"""Left Atrium: how LiteMedSAM's pseudo-labels depend on the box margin.

Two parts, on a work directory of ``benchmarks/la_adapt.py`` (its training store, embedding cache,
adapted checkpoints and the prompting student b = the loop's student 0):

1. ``diag``: the reference-box diagnostic (READS THE REFERENCES of the unlabeled volumes: the
   reference's box grown by each of ``--margins`` px on every slice with at least 4 reference
   voxels, along ``--axes``; several axes averaged as a multi-planar round does), per masker;
2. ``round``: round 1 prompted by b with the round's ``prompts.box_margin`` /
   ``prompts.propagate_margin`` set per variant (``--rounds masker:box:propagate,...``), each in
   its own copy of the training store; pseudo-label Dice / 95HD per volume against b's own mask.

Maskers: ``frozen`` (the bundled LiteMedSAM weights) and ``NAME=CHECKPOINT`` pairs of adapted
checkpoints (``--masker adapted=WORK/L2/seed0/adapted_litemedsam.pth``). Results in
``WORKDIR/box-margin-results.json`` (reused on rerun; ``--results``).

    .venv/bin/python benchmarks/la_box_margin.py --workdir bench-out/la-half \
        --masker adapted=bench-out/la-half/L2/seed0/adapted_litemedsam.pth \
        --margins 0 1 2 3 5 8 --rounds frozen:5:3,frozen:2:2,adapted:5:3,adapted:2:2
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
from hippocampus import SavedResults
from la import round_config
from la_adapt import axes_suffix, per_volume_round, reference_box_diagnostic

from semisam.pipeline.rounds.driver import run_round
from semisam.schemas import LiteMedSamConfig, MaskerKind
from semisam.workers.maskers.litemedsam import LiteMedSamMasker


def masker_checkpoints(pairs: list[str]) -> dict[str, Path | None]:
    """``frozen`` plus each ``NAME=CHECKPOINT`` of ``--masker``."""
    out: dict[str, Path | None] = {"frozen": None}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"--masker {pair!r}: expected NAME=CHECKPOINT of an existing file")
        if name in ("frozen", "axes"):  # 'axes' is a key of the multi-planar diagnostic's rows
            raise SystemExit(f"--masker {pair!r}: the name {name!r} is reserved")
        out[name] = Path(path)
    return out


def diagnostic(args: argparse.Namespace, checkpoints: dict[str, Path | None],
               results: SavedResults) -> None:
    """Part 1: per margin, the reference-box diagnostic of every masker (key
    ``diag<axes>-m<margin>``)."""
    cache = args.workdir / "embeddings"
    maskers = {name: LiteMedSamMasker(LiteMedSamConfig(batch_size=2, embedding_cache=cache,
                                                       checkpoint=ckpt), "cpu")
               for name, ckpt in checkpoints.items()}
    for margin in args.margins:
        key = f"diag{axes_suffix(args.axes)}-m{margin}"
        if key not in results:
            results[key] = reference_box_diagnostic(args.store, maskers, args.volumes,
                                                    tuple(args.axes), margin)


def rounds(args: argparse.Namespace, checkpoints: dict[str, Path | None],
           results: SavedResults) -> None:
    """Part 2: round 1 per ``masker:box:propagate`` variant (key ``round-<masker>-b<box>-p<prop>``)."""
    student = args.workdir / f"L{args.labeled}" / "seed0" / "loop" / "student_0.pt"
    if not student.is_file():
        raise SystemExit(f"{student}: no prompting student (run benchmarks/la_adapt.py first)")
    for variant in args.rounds:
        masker, box, prop = variant.split(":")
        key = f"round-{masker}-b{box}-p{prop}"
        if key in results:
            continue
        store = args.workdir / "box-margin" / f"{masker}-b{box}-p{prop}.zarr"
        if not store.exists():
            shutil.copytree(args.store, store)
        cfg = round_config(MaskerKind.litemedsam, None, args.workdir / "embeddings")
        cfg.prompts.box_margin, cfg.prompts.propagate_margin = int(box), int(prop)
        cfg.masker.litemedsam.checkpoint = checkpoints[masker]
        cfg.runtime.torch_threads = args.threads
        t0 = time.perf_counter()
        run_round(store, 1, student, cfg, show_progress=False)
        rows = per_volume_round(store, student)
        results[key] = {
            "seconds": round(time.perf_counter() - t0, 1), "volumes": rows,
            "pl_dice": float(np.mean([r["pl_dice"] for r in rows.values()])),
            "pl_hd95": float(np.mean([r["pl_hd95"] for r in rows.values()])),
            "better_than_prompter": int(sum(r["pl_dice"] > r["student_dice"]
                                            for r in rows.values())),
            "prompter_dice": float(np.mean([r["student_dice"] for r in rows.values()]))}


def summary(results: dict) -> list[str]:
    """One line per diagnostic masker/margin and per round variant."""
    lines = []
    for key, value in results.items():
        if key.startswith("diag"):
            for name, rows in value.items():
                if isinstance(rows, dict):
                    lines.append(f"{key} {name}: Dice "
                                 f"{np.mean([r['dice'] for r in rows.values()]):.4f}")
        else:
            lines.append(f"{key}: pseudo-label Dice {value['pl_dice']:.4f}, 95HD "
                         f"{value['pl_hd95']:.2f}, better than the prompter on "
                         f"{value['better_than_prompter']}/{len(value['volumes'])}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True,
                        help="a benchmarks/la_adapt.py work directory (half-size LA)")
    parser.add_argument("--labeled", type=int, default=2,
                        help="its train-L<n>.zarr and L<n>/seed0's student 0 (the prompter)")
    parser.add_argument("--masker", action="append", default=[], metavar="NAME=CHECKPOINT")
    parser.add_argument("--margins", type=int, nargs="*", default=[],
                        help="diagnostic box margins (px); none = no diagnostic")
    parser.add_argument("--axes", type=int, nargs="+", choices=(0, 1, 2), default=[2])
    parser.add_argument("--volumes", type=int, default=10,
                        help="the diagnostic on the first N unlabeled volumes")
    parser.add_argument("--rounds", default="", help="masker:box_margin:propagate_margin,...")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads of the diagnostic and of the rounds' worker")
    parser.add_argument("--results", default="box-margin-results.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    args.store = args.workdir / f"train-L{args.labeled}.zarr"
    args.rounds = [v for v in args.rounds.split(",") if v]
    checkpoints = masker_checkpoints(args.masker)
    for variant in args.rounds:
        if variant.count(":") != 2 or variant.split(":")[0] not in checkpoints:
            raise SystemExit(f"--rounds {variant!r}: expected masker:box:propagate with a "
                             f"masker of {sorted(checkpoints)}")
    results = SavedResults(args.workdir / args.results,
                           {"date": date.today().isoformat(), "command": " ".join(sys.argv),
                            "device": "cpu"})
    diagnostic(args, checkpoints, results)
    rounds(args, checkpoints, results)
    print("\n".join(summary(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
