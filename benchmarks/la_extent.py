"""How much of a round's pseudo-label error lies along the slice axis (READS THE REFERENCES).

Per unlabeled volume with a reference in STORE: the pseudo-label's Dice; the share of the
reference on slices the pseudo-label leaves empty (``missed``) and of the pseudo-label on slices
without reference (``extra``); and the Dice the pseudo-label would have with its extent along
the slice axis made right, everything else kept (``extent fixed``: the reference copied onto
the missed slices, the extra slices emptied). The gap between the two Dice columns is what a
better start and end of the structure along the slice axis could gain at most; the rest of the
error is inside the slices both cover.

    .venv/bin/python benchmarks/la_extent.py /work/bench/la-half/L2/seed1/adapted-lr1e5.zarr \\
        --round 1 --out extent.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from semisam.store import list_metas, open_store, read_reference
from semisam.store.rounds import read_output
from semisam.training.metrics import dice


def extent_row(label: np.ndarray, reference: np.ndarray, axis: int) -> dict:
    """One volume's figures (module docstring) for ``XxYxZ`` bool ``label`` and ``reference``
    along slice ``axis``."""
    label, reference = np.moveaxis(label, axis, -1), np.moveaxis(reference, axis, -1)
    has_label, has_ref = label.any(axis=(0, 1)), reference.any(axis=(0, 1))
    missed, extra = has_ref & ~has_label, has_label & ~has_ref
    fixed = label.copy()
    fixed[..., missed] = reference[..., missed]
    fixed[..., extra] = False
    missed_share = reference[..., missed].sum() / max(int(reference.sum()), 1)
    extra_share = label[..., extra].sum() / max(int(label.sum()), 1)
    return {"dice": float(dice(label, reference)), "extent_fixed_dice": float(dice(fixed, reference)),
            "missed_slices": int(missed.sum()), "missed_share": float(missed_share),
            "extra_slices": int(extra.sum()), "extra_share": float(extra_share)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--axis", type=int, default=2, help="the round's slice axis")
    parser.add_argument("--out", type=Path, default=None, help="JSON of every row")
    args = parser.parse_args(argv)
    root = open_store(args.store, read_only=True)
    rows = {}
    for meta in list_metas(root):
        reference = None if meta.labeled else read_reference(root, meta.volume_id)
        label = read_output(root, args.round, "pseudo_label", meta.volume_id)
        if reference is None or label is None:
            continue
        rows[meta.volume_id] = extent_row(np.asarray(label) > 0, np.asarray(reference) > 0,
                                          args.axis)
    if not rows:
        raise SystemExit(f"{args.store}: no pseudo-labeled volume with a reference in round "
                         f"{args.round}")
    print("| volume | Dice | extent fixed | missed slices (share of reference) | extra slices "
          "(share of pseudo-label) |\n|---|---:|---:|---|---|")
    for vid, r in rows.items():
        print(f"| {vid} | {r['dice']:.3f} | {r['extent_fixed_dice']:.3f} | {r['missed_slices']} "
              f"({r['missed_share']:.3f}) | {r['extra_slices']} ({r['extra_share']:.3f}) |")
    mean = {k: float(np.mean([r[k] for r in rows.values()])) for k in next(iter(rows.values()))}
    print(f"| **mean** | {mean['dice']:.3f} | {mean['extent_fixed_dice']:.3f} | "
          f"{mean['missed_slices']:.1f} ({mean['missed_share']:.3f}) | "
          f"{mean['extra_slices']:.1f} ({mean['extra_share']:.3f}) |")
    if args.out:
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "date":
                                        time.strftime("%Y-%m-%d"), "mean": mean, "volumes": rows},
                                       indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
