"""Left Atrium: round recipes compared on the first N unlabeled volumes (frozen vs adapted
LiteMedSAM, largest vs prior component), all prompted by the same student.

In ``WORKDIR/rounds-L<L>-N<N>.zarr`` (the L labeled volumes and the first N unlabeled ones of
``benchmarks/la.py``'s split, half size), one round per recipe (round 1, 2, ...), each scored by
`evaluate_round` against the references: pseudo-label Dice and 95HD (voxels) per volume, the
student's own, and on how many volumes the pseudo-label beats the student. LiteMedSAM's image
embeddings come from ``WORKDIR/embeddings`` (shared with la.py and la_adapt.py; an adapted
checkpoint shares its base's image encoder and so its embeddings).

    .venv/bin/python benchmarks/la_rounds.py --workdir /work/bench/la-half --labeled 2 \\
        --student WORK/L2/seed0/loop/student_0.pt --adapted WORK/L2/seed0/adapted_litemedsam.pth \\
        --volumes 10 --out docs/bench/la-rounds-L2-seed0.json

``--variant NAME=KEY=VALUE[,KEY=VALUE...]`` adds a recipe: the adapted one with fields of the
round config changed (``KEY`` a dotted path such as ``prompts.propagate_end``, ``VALUE`` JSON
or a plain string); ``--store`` names the round store (one per prompting student).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from la import DATA, args_round_config, downsampled, split_ids

from semisam.pipeline.evaluate import evaluate_round
from semisam.pipeline.ingest import ingest
from semisam.pipeline.rounds.driver import run_round
from semisam.schemas import MaskerKind, RoundConfig

log = logging.getLogger("benchmarks.la_rounds")

RECIPES = ("frozen", "frozen+prior", "adapted", "adapted+prior")


def parse_variant(text: str) -> tuple[str, dict[str, object]]:
    """``NAME=KEY=VALUE[,KEY=VALUE...]`` -> (name, {dotted key: value}); values are JSON where
    they parse as JSON, else strings."""
    name, _, rest = text.partition("=")
    if not name or not rest:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected NAME=KEY=VALUE[,...]")
    fields: dict[str, object] = {}
    for item in rest.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--variant {text!r}: {item!r} is not KEY=VALUE")
        try:
            fields[key] = json.loads(value)
        except json.JSONDecodeError:
            fields[key] = value
    return name, fields


def recipe_config(args: argparse.Namespace, recipe: str) -> RoundConfig:
    """la.py's LiteMedSAM round, with the adapted checkpoint and/or the component prior, or a
    ``--variant`` of the adapted round."""
    cfg = args_round_config(args)
    if recipe in args.variants:
        cfg.masker.litemedsam.checkpoint = args.adapted
        for key, value in args.variants[recipe].items():
            *path, field = key.split(".")
            section = cfg
            for part in path:
                section = getattr(section, part)
            if field not in type(section).model_fields:
                raise SystemExit(f"--variant {recipe}: {key} is not a round config field")
            setattr(section, field, value)
        return cfg
    if recipe.startswith("adapted"):
        cfg.masker.litemedsam.checkpoint = args.adapted
    if recipe.endswith("+prior"):
        cfg.prompts.component = "prior"
    return cfg


def subset_store(args: argparse.Namespace) -> Path:
    """The labeled volumes and the first ``--volumes`` unlabeled ones, ingested once."""
    ids = [x.strip() for x in (args.data / "volumes.list").read_text().split() if x.strip()]
    split = split_ids(ids, args.labeled, 8, args.volumes)
    data = downsampled(args.data, args.workdir / "data-x0.5", ids, 0.5)
    store = args.store or args.workdir / f"rounds-L{args.labeled}-N{args.volumes}.zarr"
    if not (store / "zarr.json").is_file():
        report = ingest(store, [data / f"{i}.h5" for i in split["labeled"] + split["unlabeled"]],
                        labeled=set(split["labeled"]))
        if not report.ok:
            raise SystemExit(f"ingest into {store} failed: {report.failed[0].reason}")
    return store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/la-half"))
    parser.add_argument("--labeled", type=int, default=2)
    parser.add_argument("--volumes", type=int, default=10)
    parser.add_argument("--student", type=Path, required=True, help="the prompting student")
    parser.add_argument("--adapted", type=Path, default=None, help="adapted LiteMedSAM")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--variant", action="append", default=[], type=parse_variant,
                        help="NAME=KEY=VALUE[,KEY=VALUE...]: the adapted round with those "
                        "round config fields (dotted keys) changed; runs after --recipes")
    parser.add_argument("--store", type=Path, default=None,
                        help="the round store (default WORKDIR/rounds-L<L>-N<N>.zarr)")
    parser.add_argument("--out", type=Path, default=Path("la-rounds.json"))
    args = parser.parse_args(argv)
    args.masker, args.sam_checkpoint, args.no_embedding_cache = MaskerKind.litemedsam, None, False
    args.variants = dict(args.variant)
    args.recipes = [*args.recipes, *args.variants]
    if any(r.startswith("adapted") or r in args.variants for r in args.recipes) \
            and args.adapted is None:
        parser.error("the adapted recipes need --adapted")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    store = subset_store(args)
    results = json.loads(args.out.read_text())["results"] if args.out.is_file() else {}
    for index, recipe in enumerate(args.recipes, 1):
        if recipe in results:
            continue
        t0 = time.perf_counter()
        run_round(store, index, args.student, recipe_config(args, recipe), show_progress=False)
        ev = evaluate_round(store, index, args.student)
        own = {c.volume_id: c for c in ev.student.cases}
        results[recipe] = {"seconds": round(time.perf_counter() - t0, 1), "volumes": {
            c.volume_id: {"pl_dice": c.dice, "pl_hd95": c.hd95_voxels,
                          "student_dice": own[c.volume_id].dice,
                          "student_hd95": own[c.volume_id].hd95_voxels}
            for c in ev.pseudo_label.cases}}
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "date":
                                        time.strftime("%Y-%m-%d"), "results": results}, indent=2))
    print(table(results))
    return 0


def table(results: dict) -> str:
    """Means per recipe, and per volume the pseudo-label Dice of every recipe."""
    lines = ["| recipe | volumes | pseudo-label Dice | 95HD | student Dice | better than student |"
             " seconds |", "|---|---|---|---|---|---|---|"]
    for recipe, r in results.items():
        vols = r["volumes"].values()
        hd = [v["pl_hd95"] for v in vols if v["pl_hd95"] is not None]
        lines.append(f"| {recipe} | {len(vols)} | {np.mean([v['pl_dice'] for v in vols]):.3f} | "
                     f"{np.mean(hd):.2f} | {np.mean([v['student_dice'] for v in vols]):.3f} | "
                     f"{sum(v['pl_dice'] > v['student_dice'] for v in vols)}/{len(vols)} | "
                     f"{r['seconds']} |")
    names = list(results)
    ids = list(results[names[0]]["volumes"]) if names else []
    lines += ["", "| volume | student | " + " | ".join(names) + " |",
              "|---|---|" + "---|" * len(names)]
    for vid in ids:
        first = results[names[0]]["volumes"][vid]
        lines.append(f"| {vid} | {first['student_dice']:.3f} | " + " | ".join(
            f"{results[n]['volumes'].get(vid, {}).get('pl_dice', float('nan')):.3f}"
            for n in names) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
